"""Where this node may spill requests: the other nodes' records, as per-upstream peer lists for the workers.

The master watches every node record (`nodes/` in etcd, from the revision it read) and turns them into
`protocol.Peers`: for each of this node's VM upstreams, the ready peers with room for it, weighted by
that room (free VM slots plus ready VMs), none with requests queued. It sends the lists to its workers
only when they change (records change at most once a second per node), and to each new worker as it
starts. While etcd is away the workers keep the last lists; a peer that fails is left out by the
workers' own passive health. docs/cluster.md, "Spill to peers".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ukproxy.cluster.etcd import EtcdClient, Event, KeyValue
from ukproxy.cluster.keys import Keys
from ukproxy.config import Config
from ukproxy.config_reader import Invalid, host_port
from ukproxy.control import ControlChannel
from ukproxy.protocol import PeerInfo, Peers

log = logging.getLogger("ukproxy.cluster")


def room(capacity: dict[str, Any]) -> int:
    """How many more requests a peer's pool could take at once, roughly; 0 while it queues."""
    try:
        if int(capacity.get("queue", 0)) > 0:
            return 0
        return max(0, int(capacity.get("free", 0))) + max(0, int(capacity.get("ready", 0)))
    except (TypeError, ValueError):
        return 0


def peer_lists(records: dict[str, dict[str, Any]], me: str, config: Config) -> dict[str, list[PeerInfo]]:
    """Per VM upstream of `config`: the peers (never `me`) that may take its requests now."""
    out: dict[str, list[PeerInfo]] = {}
    for upstream in config.upstreams:
        if upstream.vm is None:
            continue  # only a VM pool is this node's own capacity; static servers are anyone's
        peers = []
        for node, record in sorted(records.items()):
            if node == me or record.get("state") != "ready" or not record.get("peer"):
                continue
            capacity = (record.get("capacity") or {}).get(upstream.name)
            weight = room(capacity) if isinstance(capacity, dict) else 0
            if weight <= 0:
                continue
            try:
                host, port = host_port(record["peer"])
            except Invalid:
                continue
            peers.append(PeerInfo(node, host, port, weight))
        out[upstream.name] = peers
    return out


class PeerDirectory:
    """The other nodes' records as this master last read them, and the peer lists its workers hold."""

    def __init__(self, keys: Keys, me: str, config: Callable[[], Config], channels: Callable[[], list[ControlChannel]]):
        self.keys = keys
        self.me = me
        self.config = config  # the master's running config (it changes at a reload)
        self.channels = channels  # every live worker's control channel
        self.records: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, list[PeerInfo]] = {}
        self.reads = 0  # full reads of the records that succeeded

    async def follow(self, client: EtcdClient) -> None:
        """Read every record, then apply each change from the revision read on. Returns or raises
        (EtcdError, Compacted) when the watch breaks: the caller reads again after its backoff."""
        kvs, revision = await client.get(self.keys.nodes, prefix=True)
        self.records = {}
        for kv in kvs:
            self._put(kv)
        self.reads += 1
        self._changed()
        async for events in client.watch(self.keys.nodes, revision + 1, prefix=True):
            for event in events:
                self._apply(event)
            self._changed()

    def _apply(self, event: Event) -> None:
        if event.kind == "DELETE":
            self.records.pop(event.kv.key[len(self.keys.nodes):], None)
        else:
            self._put(event.kv)

    def _put(self, kv: KeyValue) -> None:
        try:
            record = json.loads(kv.value)
        except ValueError:
            return
        if isinstance(record, dict):
            self.records[kv.key[len(self.keys.nodes):]] = record

    def _changed(self) -> None:
        lists = peer_lists(self.records, self.me, self.config())
        if lists == self.sent:
            return
        self.sent = lists
        log.info("cluster: spill peers now %s", _describe(lists))
        for channel in self.channels():
            channel.send(Peers(lists))

    def greet(self, channel: ControlChannel) -> None:
        """A new worker (a respawn or a reload's) learns the peers at once."""
        self.sent = peer_lists(self.records, self.me, self.config())
        if self.sent:
            channel.send(Peers(self.sent))

    def status(self) -> dict[str, list[dict[str, Any]]]:
        """The lists the workers hold, each peer with the capacity its record now shows."""
        return {name: [{"node": p.node, "peer": f"{p.host}:{p.port}", "weight": p.weight,
                        **((self.records.get(p.node, {}).get("capacity") or {}).get(name) or {})} for p in peers]
                for name, peers in self.sent.items()}


def _describe(lists: dict[str, list[PeerInfo]]) -> str:
    return "; ".join(f"{name}: " + (", ".join(f"{p.node} ({p.weight})" for p in peers) or "none")
                     for name, peers in sorted(lists.items())) or "none"
