"""This node's part in the cluster, run by the master: membership under a lease, and the shared config.

Two loops, each retrying with a backoff while etcd is away (the node keeps serving what it last knew):
- membership: register (a record created only if no other node holds the id), renew the lease, and
  rewrite the record when it changes, at most once per MIN_WRITE_INTERVAL. A lease that expired (the
  node was paused or cut off past its TTL) took the record with it: register again, one record.
- config: read the shared config, apply it through the master's graceful reload, then watch from the
  revision read; a compacted revision means re-read. The outcome goes under this node's status key.
- peers (unless `spill = false`): follow the other nodes' records and tell the workers where they may
  spill requests when a VM pool is full (`spill.PeerDirectory`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import secrets
import time
from typing import Any

from ukproxy.cluster import metrics
from ukproxy.cluster.capacity import capacity, queued_requests
from ukproxy.cluster.etcd import Compacted, EtcdClient, EtcdError, KeyValue, b64, compare, put_op
from ukproxy.cluster.keys import Keys
from ukproxy.cluster.shared_config import load_merged
from ukproxy.cluster.spill import PeerDirectory
from ukproxy.cluster.startup import Shared, keep, label
from ukproxy.config import ClusterConfig, Config

log = logging.getLogger("ukproxy.cluster")

TICK = 1.0  # how often the record is looked at (written only if it changed)
MIN_WRITE_INTERVAL = 1.0  # at most one record write per this long
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0


class Refused(Exception):
    """Another live node holds this node's id."""


class LeaseLost(Exception):
    """Our lease expired (and took our keys with it)."""


class Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class ClusterNode:
    def __init__(self, master: Any, config: ClusterConfig, joined: Shared | None = None):
        self.master = master
        self.config = config
        self.keys = Keys(config.name)
        self.client = EtcdClient(config.endpoints)
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"  # tells this run from another with our id
        self.state = "ready"
        self.etcd = "connecting"  # connected, unreachable or refused
        self.etcd_error = ""
        self.etcd_since = time.time()
        self.lease = 0
        self.record: dict[str, Any] | None = None  # as last written
        self.written_at = 0.0
        self.shared_text: str | None = None  # the shared config running (None: the local file's own)
        self.applied_revision = 0
        self.outcome: dict[str, Any] = {"revision": 0, "applied": True, "error": None}
        self.outcome_written: dict[str, Any] | None = None
        self.seen_revision: int | None = None
        self.applying = asyncio.Lock()
        self.changed = asyncio.Event()  # something to publish now rather than at the next tick
        self.tasks: list[asyncio.Task[None]] = []
        self.registrations = 0
        self.peers = PeerDirectory(self.keys, config.node_id, lambda: master.config,
                                   lambda: [w.channel for w in master.workers.values()])
        if joined is not None:  # started on it (ukproxy.cluster.startup)
            self.shared_text, self.applied_revision = joined.text, joined.revision
            self.outcome = {"revision": joined.revision, "applied": True, "error": None}
        master.load_config = self.load_config  # a SIGHUP re-reads the local file, merged with what runs
        master.observability.add_status_provider("cluster", self.status)

    def start(self) -> None:
        metrics.etcd_up(False)
        metrics.config_applied(self.applied_revision)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._membership()), loop.create_task(self._config())]
        if self.config.spill:
            self.tasks.append(loop.create_task(self._peers()))
        log.info("cluster %s: node %s joining through %s", self.config.name, self.config.node_id,
                 ", ".join(self.config.endpoints))

    def draining(self) -> None:
        self.state = "draining"
        self.changed.set()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lease:
            try:
                await self.client.revoke(self.lease)  # our record and status go now, not after the TTL
            except EtcdError as e:
                log.warning("cluster: could not leave at once (%s); the record goes with the lease", e)
        await self.client.close()

    def load_config(self, path: str) -> Config:
        return load_merged(path, self.shared_text, self._label(self.applied_revision))

    def _label(self, revision: int) -> str:
        return label(self.config, revision)

    # etcd's state

    def _connected(self) -> None:
        if self.etcd != "connected":
            log.info("cluster: etcd reached (%s)", self.client.endpoints[0])
            self.etcd, self.etcd_error, self.etcd_since = "connected", "", time.time()
            metrics.etcd_up(True)

    def _unreachable(self, error: Exception) -> None:
        if self.etcd != "unreachable":
            log.warning("cluster: etcd unreachable, serving on what this node knows: %s", error)
            self.etcd_since = time.time()
        self.etcd, self.etcd_error = "unreachable", str(error)
        metrics.etcd_up(False)

    def status(self) -> dict[str, Any]:
        return {
            "cluster": self.config.name, "node": self.config.node_id, "peer": self.config.peer,
            "state": self.state, "etcd": self.etcd, "etcd_error": self.etcd_error,
            "etcd_since": round(self.etcd_since, 3), "lease": f"{self.lease:x}" if self.lease else None,
            "registrations": self.registrations, "config_revision": self.applied_revision,
            "last_config": self.outcome, "record": self.record, "spill_peers": self.peers.status(),
        }

    def greet(self, channel: Any) -> None:
        """A worker just started: it learns where to spill."""
        if self.config.spill:
            self.peers.greet(channel)

    # membership

    async def _membership(self) -> None:
        backoff = Backoff()
        renewed_at = 0.0
        while True:
            try:
                if not self.lease:
                    await self._register()
                    renewed_at = time.monotonic()
                elif time.monotonic() - renewed_at >= self.config.lease_ttl / 3:
                    if await self.client.keepalive(self.lease) <= 0:
                        raise LeaseLost()
                    renewed_at = time.monotonic()
                self.changed.clear()
                await self._publish()
                self._connected()
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), TICK)
            except LeaseLost:
                log.warning("cluster: lease %x expired (this node was paused or cut off past %ds): registering "
                            "again", self.lease, self.config.lease_ttl)
                self.lease = 0
            except Refused as e:
                if self.etcd != "refused":
                    log.error("cluster: %s", e)
                self.etcd, self.etcd_error = "refused", str(e)
                metrics.etcd_up(True)
                await asyncio.sleep(self.config.lease_ttl)  # the holder may be a dead predecessor: its lease ends
            except EtcdError as e:
                self._unreachable(e)
                await asyncio.sleep(backoff.next())

    def _record_now(self, queues: dict[str, int]) -> dict[str, Any]:
        config = self.master.config
        return {
            "node": self.config.node_id, "instance": self.instance, "peer": self.config.peer,
            "state": self.state, "capacity": capacity(config, list(self.master.fleet.vms.values()), queues),
        }

    async def _queues(self) -> dict[str, int]:
        """Requests queued per upstream; only VM pools queue, so without them the metric files stay unread."""
        if not any(u.vm is not None for u in self.master.config.upstreams):
            return {}
        return await asyncio.get_running_loop().run_in_executor(None, queued_requests)

    async def _register(self) -> None:
        queues = await self._queues()
        record = self._record_now(queues)
        lease = await self.client.grant(self.config.lease_ttl)
        node_key = self.keys.node(self.config.node_id)
        ok, answer = await self.client.txn(
            [compare(node_key, "CREATE", 0)],
            [put_op(node_key, json.dumps(record), lease),
             put_op(self.keys.status(self.config.node_id), json.dumps(self.outcome), lease)],
            [{"request_range": {"key": b64(node_key)}}])
        if not ok:
            with contextlib.suppress(EtcdError):
                await self.client.revoke(lease)
            raise Refused(f"node id {self.config.node_id!r} is held by another node ({_holder(answer)}): this node "
                          "stays out of the cluster while that record lives, and serves its own config")
        self.lease, self.record, self.written_at = lease, record, time.monotonic()
        self.outcome_written = dict(self.outcome)
        self.registrations += 1
        metrics.wrote("register")
        log.info("cluster: registered as %s (lease %x, TTL %ds)", self.config.node_id, lease, self.config.lease_ttl)

    async def _publish(self) -> None:
        """Write the record and the config outcome if they changed, at a bounded rate, and only while the
        key is still ours (under our lease): a record that vanished means the lease did."""
        if time.monotonic() - self.written_at < MIN_WRITE_INTERVAL:
            return
        queues = await self._queues()
        record = self._record_now(queues)
        puts = []
        if record != self.record:
            puts.append(put_op(self.keys.node(self.config.node_id), json.dumps(record), self.lease))
        if self.outcome != self.outcome_written:
            puts.append(put_op(self.keys.status(self.config.node_id), json.dumps(self.outcome), self.lease))
        if not puts:
            return
        outcome = dict(self.outcome)
        ok, _ = await self.client.txn([compare(self.keys.node(self.config.node_id), "LEASE", self.lease)], puts)
        if not ok:
            raise LeaseLost()
        self.record, self.outcome_written, self.written_at = record, outcome, time.monotonic()
        metrics.wrote("record")

    # the peers to spill to

    async def _peers(self) -> None:
        backoff = Backoff()
        while True:
            reads = self.peers.reads
            try:
                await self.peers.follow(self.client)
            except Compacted as e:
                log.warning("cluster: node records watch: %s; reading them again", e)
                continue
            except EtcdError as e:
                self._unreachable(e)
            if self.peers.reads != reads:
                backoff.reset()  # it read and watched a while: this break is a first failure, not one more
            await asyncio.sleep(backoff.next())

    # the shared config

    async def _config(self) -> None:
        backoff = Backoff()
        while True:
            try:
                kvs, revision = await self.client.get(self.keys.config)
                self._connected()
                await self._apply(kvs[0] if kvs else None)
                backoff.reset()
                async for events in self.client.watch(self.keys.config, revision + 1):
                    last = events[-1]
                    await self._apply(last.kv if last.kind == "PUT" else None)
            except Compacted as e:
                log.warning("cluster: config watch: %s; reading the config again", e)
            except EtcdError as e:
                self._unreachable(e)
                await asyncio.sleep(backoff.next())

    async def _apply(self, kv: KeyValue | None) -> None:
        """Run the shared config in `kv` (None: deleted, the local file alone) unless it already runs."""
        revision = kv.mod_revision if kv is not None else 0
        if revision == self.seen_revision:
            return
        async with self.applying:
            if self.master.stopping:
                return
            self.seen_revision = revision
            if kv is None and self.shared_text is None:
                return
            try:
                text = kv.value.decode() if kv is not None else None
            except UnicodeDecodeError:
                self._refused(revision, f"{self._label(revision)}: not UTF-8 text")
                return
            if text == self.shared_text:  # runs already (started on it, or pushed again unchanged): no reload
                self._ran(text, revision)
                return
            reason = await self.master.reload(lambda path: load_merged(path, text, self._label(revision)))
            if reason is not None:
                self._refused(revision, reason)
                return
            self._ran(text, revision)

    def _ran(self, text: str | None, revision: int) -> None:
        self.shared_text, self.applied_revision = text, revision
        try:
            keep(self.master.config.pid_file, Shared(text, revision) if text is not None else None)
        except OSError as e:
            log.warning("cluster: cannot keep a copy of the shared config: %s", e)
        self.outcome = {"revision": revision, "applied": True, "error": None}
        metrics.config_applied(revision)
        log.info("cluster: running the shared config, revision %d", revision)
        self.changed.set()

    def _refused(self, revision: int, reason: str) -> None:
        log.error("cluster: shared config revision %d refused, keeping revision %d: %s",
                  revision, self.applied_revision, reason)
        self.outcome = {"revision": revision, "applied": False, "error": reason, "running": self.applied_revision}
        self.changed.set()
        metrics.config_refused()


def _holder(answer: dict[str, Any]) -> str:
    """Who holds the id, from the failed registration's range answer."""
    try:
        kv = answer["responses"][0]["response_range"]["kvs"][0]
        record = json.loads(base64.b64decode(kv["value"]))
        return f"instance {record.get('instance')}, peer {record.get('peer') or '-'}"
    except (KeyError, IndexError, ValueError, TypeError):
        return "record unreadable"
