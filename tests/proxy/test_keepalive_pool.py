"""The per-worker idle upstream connection pool: bounded, warmest first, idle ones expire."""

from __future__ import annotations

import asyncio

from tests.waiting import await_until
from ukproxy.upstream.keepalive import KeepalivePool
from ukproxy.upstream.server import Server


class Conn:
    def __init__(self, name: str):
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def test_take_gives_the_most_recent_of_that_server():
    pool = KeepalivePool(asyncio.get_running_loop(), size=10, timeout=60)
    a, b = Server("127.0.0.1", 1), Server("127.0.0.1", 2)
    a1, a2, b1 = Conn("a1"), Conn("a2"), Conn("b1")
    for server, conn in ((a, a1), (b, b1), (a, a2)):
        assert pool.put(server, conn)
    assert pool.take(a) is a2
    assert pool.take(a) is a1
    assert pool.take(a) is None
    assert pool.take(b) is b1
    assert len(pool) == 0
    assert pool.reused == 3


async def test_size_bounds_the_pool_and_evicts_the_longest_idle():
    pool = KeepalivePool(asyncio.get_running_loop(), size=2, timeout=60)
    server = Server("127.0.0.1", 1)
    conns = [Conn(str(i)) for i in range(3)]
    for conn in conns:
        pool.put(server, conn)
    assert len(pool) == 2
    assert conns[0].closed and not conns[1].closed and not conns[2].closed
    assert pool.idle_for(server) == 2


async def test_size_zero_keeps_nothing():
    pool = KeepalivePool(asyncio.get_running_loop(), size=0, timeout=60)
    assert not pool.put(Server("127.0.0.1", 1), Conn("x"))
    assert len(pool) == 0


async def test_idle_connections_expire_and_discard_forgets():
    pool = KeepalivePool(asyncio.get_running_loop(), size=5, timeout=0.05)
    server = Server("127.0.0.1", 1)
    expiring, discarded = Conn("e"), Conn("d")
    pool.put(server, expiring)
    pool.put(server, discarded)
    pool.discard(discarded)  # the server closed it while parked
    assert pool.idle_for(server) == 1
    await await_until(lambda: expiring.closed, "the idle connection expired", timeout=5, interval=0.05)
    assert not discarded.closed  # its owner closes it, the pool only forgets it
    assert pool.take(server) is None


async def test_a_taken_connection_is_not_expired_and_later_ones_still_are():
    pool = KeepalivePool(asyncio.get_running_loop(), size=5, timeout=0.05)
    server = Server("127.0.0.1", 1)
    taken, later = Conn("t"), Conn("l")
    pool.put(server, taken)
    assert pool.take(server) is taken  # back in use before the sweep comes round
    await asyncio.sleep(0.1)
    pool.put(server, later)  # parked after the first sweep: the sweep must be armed again
    await await_until(lambda: later.closed, "the later connection expired", timeout=5, interval=0.05)
    assert not taken.closed
    assert len(pool) == 0
