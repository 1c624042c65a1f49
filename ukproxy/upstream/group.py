"""An upstream as the proxy sees it: its settings, its servers and the balancer that picks among them,
and this worker's idle keep-alive connections to them.

The servers come from a source, a static list or a VM pool: the proxy only calls `acquire` and
`release`, and never knows which source it got (docs/architecture.md, rule 2: one backend interface).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ukproxy.config import ServerConfig, UpstreamConfig
from ukproxy.upstream.balancing import Balancer, make_balancer
from ukproxy.upstream.keepalive import KeepalivePool
from ukproxy.upstream.server import Server

if TYPE_CHECKING:
    from ukproxy.upstream.host_servers import MakeSocket
    from ukproxy.upstream.peers import PeerSet
    from ukproxy.upstream.vm_pool import VmPool

# How far a request may look for a server past this worker's own (`UpstreamGroup.acquire`):
LOCAL = 0  # its own servers, waiting in a VM pool's queue if need be (tcp sessions)
MAY_SPILL = 1  # a peer node's, when its own VM pool is full, before queueing (http requests in a cluster)
FROM_PEER = 2  # a request a peer spilled here: this node's own VMs only, and no queue (503 at once when full)


def server_from_config(c: ServerConfig) -> Server:
    return Server(
        host=c.host, port=c.port, weight=c.weight, max_fails=c.max_fails, fail_timeout=c.fail_timeout,
        max_conns=c.max_conns, backup=c.backup, down=c.down,
    )


class UpstreamGroup:
    def __init__(self, config: UpstreamConfig, loop: asyncio.AbstractEventLoop, servers: list[Server] | None = None):
        self.config = config
        self.name = config.name
        if servers is None:
            servers = [server_from_config(s) for s in config.servers]
        options = {"consistent": config.consistent} if config.balance == "hash" else {}
        self.balancer: Balancer = make_balancer(config.balance, servers, **options)
        self.vm_pool: VmPool | None = None  # the source of the servers, when VMs (set by the worker)
        self.peers: PeerSet | None = None  # in a cluster, with a VM pool: peer nodes to spill to (set by the worker)
        # static servers across the backend namespace: their sockets come from the host's (upstream/host_servers.py)
        self.make_socket: MakeSocket | None = None
        # http's idle connections to the servers, shared by every http listener of this worker
        self.keepalive_pool: KeepalivePool[Any] = KeepalivePool(loop, config.keepalive, config.keepalive_timeout)
        self.keyed = config.balance in ("hash", "ip_hash")  # does the balancer want a key per request?

    @property
    def servers(self) -> list[Server]:
        return self.balancer.servers

    def set_servers(self, servers: list[Server]) -> None:
        self.balancer.set_servers(servers)

    def acquire_nowait(self, key: bytes | str | None, tried: Collection[Server], now: float) -> Server | None:
        """A server if the balancer has one at once, else None (then `acquire` may wait for a VM pool)."""
        server = self.balancer.pick(key, tried, now)
        if server is not None:
            server.connection_started()
        return server

    async def acquire(self, key: bytes | str | None, tried: Collection[Server], now: float,
                      reach: int = LOCAL) -> Server | None:
        """A server for one connection or request, or None. A VM pool may grow or queue first; when it is
        full (at its max) a request that may spill goes to a peer node first (`reach`: see LOCAL)."""
        server = self.acquire_nowait(key, tried, now)
        vm_pool = self.vm_pool
        if server is not None or vm_pool is None:
            return server
        peers = self.peers
        if reach != LOCAL and peers is not None and not vm_pool.can_grow():
            if reach == FROM_PEER:
                return None  # spilled here because its node was full: no queue, the answer is 503 at once
            server = peers.acquire(tried, now)
            if server is not None:
                return server
        deadline = vm_pool.queue_deadline(now)
        while await vm_pool.wait_for_capacity(deadline):
            server = self.acquire_nowait(key, tried, vm_pool.loop.time())
            if server is not None:
                return server
        return None

    def release(self, server: Server) -> None:
        server.connection_finished()
        if self.vm_pool is not None and (self.peers is None or not self.peers.holds(server)):
            self.vm_pool.released(server)
