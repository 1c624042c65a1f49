"""Idle keep-alive connections to an upstream's servers, kept by one worker for reuse (nginx's `keepalive N`).

At most `size` idle connections per upstream group, indexed by server. Taking gives the most recently
parked connection of that server (warmest, least likely to have been closed by the server); parking
beyond `size` closes the longest-idle one; a connection idle for `timeout` is closed. A parked
connection that hears anything from its server (data, EOF, reset) is closed and forgotten by its owner
calling `discard`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Protocol

from ukproxy.upstream.server import Server


class Poolable(Protocol):
    def close(self) -> None: ...


class KeepalivePool:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, timeout: float):
        self.loop = loop
        self.size = size
        self.timeout = timeout
        # Every idle connection, oldest first, with its server and its expiry timer.
        self._idle: OrderedDict[Poolable, tuple[Server, asyncio.TimerHandle | None]] = OrderedDict()
        self._by_server: dict[Server, list[Poolable]] = {}
        self.reused = 0  # connections handed out again: what the pool is for

    def __len__(self) -> int:
        return len(self._idle)

    def idle_for(self, server: Server) -> int:
        return len(self._by_server.get(server, ()))

    def take(self, server: Server) -> Poolable | None:
        conns = self._by_server.get(server)
        if not conns:
            return None
        conn = conns.pop()
        _, timer = self._idle.pop(conn)
        if timer is not None:
            timer.cancel()
        self.reused += 1
        return conn

    def put(self, server: Server, conn: Poolable) -> bool:
        """Park `conn`; False (and the caller closes it) when the pool keeps nothing."""
        if self.size <= 0:
            return False
        timer = self.loop.call_later(self.timeout, self._expire, conn) if self.timeout > 0 else None
        self._idle[conn] = (server, timer)
        self._by_server.setdefault(server, []).append(conn)
        while len(self._idle) > self.size:
            oldest = next(iter(self._idle))
            self.discard(oldest)
            oldest.close()
        return True

    def discard(self, conn: Poolable) -> None:
        entry = self._idle.pop(conn, None)
        if entry is None:
            return
        server, timer = entry
        if timer is not None:
            timer.cancel()
        conns = self._by_server[server]
        conns.remove(conn)
        if not conns:
            del self._by_server[server]

    def close_all(self) -> None:
        for conn in list(self._idle):
            self.discard(conn)
            conn.close()

    def _expire(self, conn: Poolable) -> None:
        if conn in self._idle:
            self.discard(conn)
            conn.close()
