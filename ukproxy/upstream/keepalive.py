"""Idle keep-alive connections to an upstream's servers, kept by one worker for reuse (nginx's `keepalive N`).

At most `size` idle connections per upstream group, indexed by server. Taking gives the most recently
parked connection of that server (warmest, least likely to have been closed by the server); parking
beyond `size` closes the longest-idle one; a connection idle for `timeout` is closed (by one sweeping
timer per pool, not a timer per parking: parking and taking are on every request's path). A parked
connection that hears anything from its server (data, EOF, reset) is closed and forgotten by its owner
calling `discard`.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

from ukproxy.upstream.server import Server


class Poolable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Poolable)


class KeepalivePool(Generic[C]):
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, timeout: float):
        self.loop = loop
        self.size = size
        self.timeout = timeout
        # Every idle connection, oldest first (a dict keeps insertion order; compiled, a plain dict's
        # operations are native where an OrderedDict's are calls), with its server and when it was parked.
        self._idle: dict[C, tuple[Server, float]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._by_server: dict[Server, list[C]] = {}
        self.reused = 0  # connections handed out again: what the pool is for

    def __len__(self) -> int:
        return len(self._idle)

    def idle_for(self, server: Server) -> int:
        return len(self._by_server.get(server, ()))

    def take(self, server: Server) -> C | None:
        conns = self._by_server.get(server)
        if not conns:
            return None
        conn = conns.pop()
        del self._idle[conn]
        self.reused += 1
        return conn

    def put(self, server: Server, conn: C) -> bool:
        """Park `conn`; False (and the caller closes it) when the pool keeps nothing."""
        if self.size <= 0:
            return False
        now = self.loop.time()
        self._idle[conn] = (server, now)
        conns = self._by_server.get(server)
        if conns is None:
            self._by_server[server] = [conn]
        else:
            conns.append(conn)
        if self._sweep is None and self.timeout > 0:
            self._sweep = self.loop.call_at(now + self.timeout, self._expire)
        while len(self._idle) > self.size:
            oldest = next(iter(self._idle))
            self.discard(oldest)
            oldest.close()
        return True

    def discard(self, conn: C) -> None:
        entry = self._idle.pop(conn, None)
        if entry is None:
            return
        server = entry[0]
        conns = self._by_server[server]
        conns.remove(conn)
        if not conns:
            del self._by_server[server]

    def close_all(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._idle):
            self.discard(conn)
            conn.close()

    def _expire(self) -> None:
        """Close every connection idle for `timeout`, then sleep until the next one will be."""
        self._sweep = None
        deadline = self.loop.time() - self.timeout + 0.001  # the loop's clock is in ms: no busy re-arming
        idle = self._idle
        while idle:
            conn = next(iter(idle))
            parked_at = idle[conn][1]
            if parked_at > deadline:
                self._sweep = self.loop.call_at(parked_at + self.timeout, self._expire)
                return
            self.discard(conn)
            conn.close()
