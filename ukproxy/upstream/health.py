"""Active health checks: a TCP connect, or a GET of `path`, to one server every `interval`.

A server that fails `fails` checks in a row leaves rotation (`Server.health_ok`) and comes back
after `passes` checks in a row pass. A VM pool also asks for a server that keeps failing to be
replaced (`on_failing`, after `fails` + REPLACE_AFTER_FAILED_CHECKS failures); a static server is
only kept out. Each worker checks the servers it balances over; the result of every check goes to
the metrics (`ukproxy status` shows it under LAST CHECK). A static server on the host's side of a
backend namespace is checked over a host-namespace socket, as it is proxied to (`host_servers.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ukproxy import metrics
from ukproxy.config import HealthConfig
from ukproxy.upstream.host_servers import MakeSocket
from ukproxy.upstream.server import Server

log = logging.getLogger("ukproxy.health")

REPLACE_AFTER_FAILED_CHECKS = 3  # a VM failing this many checks beyond `fails` is replaced


async def _open(server: Server, make_socket: MakeSocket | None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await make_socket(asyncio.get_running_loop(), server) if make_socket is not None else None
    if sock is not None:
        return await asyncio.open_connection(sock=sock)
    return await asyncio.open_connection(server.host, server.port)


async def probe(server: Server, health: HealthConfig, make_socket: MakeSocket | None = None) -> bool:
    """One check: does the server accept a connection (tcp), and answer 2xx to GET `path` (http)?
    `make_socket`: connects the socket itself (a server across the backend namespace, host_servers.py)."""
    try:
        reader, writer = await asyncio.wait_for(_open(server, make_socket), health.timeout)
    except (TimeoutError, OSError):
        return False
    try:
        if health.type == "tcp":
            return True
        request = f"GET {health.path} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        line = await asyncio.wait_for(reader.readline(), health.timeout)
        parts = line.split()
        return len(parts) >= 2 and parts[1].startswith(b"2")
    except (TimeoutError, OSError, ValueError):  # ValueError: a status line beyond the reader's limit
        return False
    finally:
        writer.close()


class HealthCheck:
    """The checks of one server in this worker, and what they concluded."""

    def __init__(self, server: Server, health: HealthConfig, upstream: str, loop: asyncio.AbstractEventLoop,
                 on_failing: Callable[[], None] | None = None, make_socket: MakeSocket | None = None):
        self.server = server
        self.health = health
        self.upstream = upstream
        self.loop = loop
        self.on_failing = on_failing  # None: the server is only kept out of rotation while it fails
        self.make_socket = make_socket
        self.failed = 0  # checks failed in a row
        self.passed = 0  # checks passed in a row
        self.last_at: float | None = None  # wall-clock time of the last check
        self.last_ok: bool | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.health.interval)
            if self.record(await probe(self.server, self.health, self.make_socket)):
                assert self.on_failing is not None
                self._task = None
                self.on_failing()
                return

    def record(self, ok: bool) -> bool:
        """Take one check's result; True when the server should be replaced."""
        server, health = self.server, self.health
        self.last_at, self.last_ok = time.time(), ok
        metrics.health_checked(self.upstream, server.name, ok, self.last_at)
        if ok:
            self.failed = 0
            self.passed += 1
            if not server.health_ok and self.passed >= health.passes:
                server.health_ok = True
                log.info("upstream %s: %s healthy again", self.upstream, server.name)
            return False
        self.passed = 0
        self.failed += 1
        if server.health_ok and self.failed >= health.fails:
            server.health_ok = False
            log.warning("upstream %s: %s failed %d health checks: out of rotation",
                        self.upstream, server.name, self.failed)
        return self.on_failing is not None and self.failed >= health.fails + REPLACE_AFTER_FAILED_CHECKS


def check_servers(servers: list[Server], health: HealthConfig, upstream: str,
                  loop: asyncio.AbstractEventLoop, make_socket: MakeSocket | None = None) -> list[HealthCheck]:
    """Started checks for a static list of servers (kept out while failing, never replaced)."""
    checks = [HealthCheck(server, health, upstream, loop, make_socket=make_socket) for server in servers]
    for check in checks:
        check.start()
    return checks
