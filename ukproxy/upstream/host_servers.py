"""Static servers on the host's own networks, for a worker whose upstream sockets live in the backend namespace.

With VM pools on a bridge, a worker enters the backend network namespace (docs/architecture.md, "The
backend network"), so a socket it makes reaches the VMs and the service addresses, and nothing else: a
static server such as 127.0.0.1:8081 named in the same config would be the namespace's own loopback,
where nothing listens, and both its requests and its health checks failed. Such a server's sockets are
made by `HostSockets` (upstream/peers.py), whose thread stayed in the host namespace; a server inside the
backend subnet keeps the worker's own sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from ukproxy.upstream.peers import HostSockets
from ukproxy.upstream.server import Server

MakeSocket = Callable[[asyncio.AbstractEventLoop, Server], Awaitable[socket.socket | None]]


def outside(subnet: ipaddress.IPv4Network, host: str) -> bool:
    """Whether `host` lies outside the backend network (so on the host's side of it)."""
    try:
        return ipaddress.ip_address(host) not in subnet
    except ValueError:
        return True


def host_side(host_sockets: HostSockets, subnet: ipaddress.IPv4Network) -> MakeSocket:
    """`connect`'s make_socket for a static upstream: a host-namespace socket for a server outside `subnet`,
    None (the worker's own connect) for one inside it."""
    async def make(loop: asyncio.AbstractEventLoop, server: Server) -> socket.socket | None:
        if not outside(subnet, server.host):
            return None
        return await host_sockets.connect(loop, server.host, server.port)

    return make
