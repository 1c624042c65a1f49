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
    from ukproxy.upstream.vm_pool import VmPool


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

    async def acquire(self, key: bytes | str | None, tried: Collection[Server], now: float) -> Server | None:
        """A server for one connection or request, or None. A VM pool may grow or queue first."""
        server = self.acquire_nowait(key, tried, now)
        vm_pool = self.vm_pool
        if server is not None or vm_pool is None:
            return server
        deadline = vm_pool.queue_deadline(now)
        while await vm_pool.wait_for_capacity(deadline):
            server = self.acquire_nowait(key, tried, vm_pool.loop.time())
            if server is not None:
                return server
        return None

    def release(self, server: Server) -> None:
        server.connection_finished()
        if self.vm_pool is not None:
            self.vm_pool.released(server)
