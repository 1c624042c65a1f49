"""Peer nodes of a cluster as a second source of servers for an upstream: where a worker spills a request
when its own VM pool is full (docs/cluster.md, "Spill to peers").

The master learns the peers and their free capacity from etcd and sends them over the control channel
(`protocol.Peers`); the request path never waits on etcd. A peer is an ordinary `Server` (address,
weight, passive health): chosen by a smooth weighted round robin whose weights are the peers' free
capacity, and taken out for `PEER_FAIL_TIMEOUT` after a failure like any server. A spilled request
carries `SPILLED_FROM`; the peer serves it from its own VMs only, so nothing is forwarded twice.

A worker's upstream sockets live in the backend namespace, where no peer is reachable: sockets to
peers are made by `HostSockets`, a thread that stayed in the host namespace (setns moves one thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from collections.abc import Collection
from typing import Final

from ukproxy.protocol import PeerInfo
from ukproxy.upstream.balancers.round_robin import RoundRobinBalancer
from ukproxy.upstream.server import Server

SPILLED_FROM: Final = b"x-ukproxy-spilled-from"  # request header: which node spilled it (lower case, as parsed)
PEER_FAIL_TIMEOUT: Final = 5.0  # seconds a peer that failed (refused, full, unreachable) is left out


class HostSockets:
    """Sockets in the host network namespace, for a worker whose own thread moved into the backend one.

    Its single thread is started before the worker enters the backend namespace, so it stays behind:
    every socket it makes lives in the host namespace. It only makes sockets; connects run on the loop."""

    def __init__(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-net")
        self.executor.submit(lambda: None).result()  # the thread exists now, in the namespace we are in

    @staticmethod
    def _make(host: str, port: int) -> tuple[socket.socket, tuple[object, ...]]:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    async def connect(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
        """A socket connected to host:port from the host namespace (OSError when it cannot be)."""
        sock, address = await loop.run_in_executor(self.executor, self._make, host, port)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock


class PeerSet:
    """The peers that may take requests for one upstream, as this worker last heard from its master."""

    def __init__(self, origin: str, host_sockets: HostSockets | None):
        self.origin = origin.encode()  # this node's id, named in the requests it spills
        self.host_sockets = host_sockets  # None: this worker's sockets are in the host namespace already
        self.by_node: dict[str, Server] = {}
        self.members: set[Server] = set()
        self.balancer = RoundRobinBalancer([])

    def update(self, peers: list[PeerInfo]) -> None:
        """The master's new list: a peer that stays keeps its Server (and its passive health)."""
        servers: dict[str, Server] = {}
        for p in peers:
            server = self.by_node.get(p.node)
            if server is None or (server.host, server.port) != (p.host, p.port):
                server = Server(host=p.host, port=p.port, weight=max(1, p.weight), max_fails=1,
                                fail_timeout=PEER_FAIL_TIMEOUT, name=f"peer {p.node}")
            else:
                server.weight = max(1, p.weight)
            servers[p.node] = server
        for node, gone in self.by_node.items():
            if servers.get(node) is not gone:
                gone.down = True  # a request already on its way finishes; no new one goes there
        self.by_node = servers
        self.members = set(servers.values())
        self.balancer.set_servers(list(servers.values()))

    def acquire(self, tried: Collection[Server], now: float) -> Server | None:
        # A balancer of one server ignores its passive health (as nginx does); a peer is left out anyway.
        if not any(s.available(now) and s not in tried for s in self.balancer.servers):
            return None
        server = self.balancer.pick(None, tried, now)
        if server is not None:
            server.connection_started()
        return server

    def holds(self, server: Server) -> bool:
        return server in self.members

    def mark(self, request_head: bytes) -> bytes:
        """The request head with the header that tells the peer not to pass it on."""
        end = request_head.index(b"\r\n") + 2
        return request_head[:end] + b"X-Ukproxy-Spilled-From: " + self.origin + b"\r\n" + request_head[end:]

    async def connect(self, loop: asyncio.AbstractEventLoop, server: Server) -> socket.socket | None:
        """A host-namespace socket connected to the peer, or None when the loop's own connect will do."""
        if self.host_sockets is None:
            return None
        return await self.host_sockets.connect(loop, server.host, server.port)
