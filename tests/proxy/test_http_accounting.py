"""The worker's books after http traffic: every connection and request counted in is counted out.

In-process (tests.proxy.in_process: the protocol on the test's own loop, in front of a real backend) so
WorkerState can be read.
"""

from __future__ import annotations

import asyncio

from tests.proxy.backends import Backend
from tests.proxy.in_process import in_process_http
from tests.waiting import await_until
from ukproxy.protocol import Event


async def _exchange(port: int, data: bytes, close_early: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if not close_early:
        writer.write_eof()
    try:
        return b"" if close_early else await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def _stalled_head(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the rest: the header timeout answers
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_counts_return_to_zero_after_mixed_traffic():
    backend = Backend()
    try:
        async with in_process_http(f'["{backend.address}"]', "[http]\nclient_header_timeout = 0.5") as proxy:
            state, port, group = proxy.state, proxy.port, proxy.group
            answers = await asyncio.gather(
                *(_exchange(port, b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i) for i in range(20)),
                _exchange(port, b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"),
                _exchange(port, b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
                _exchange(port, b"GET /sleep/0.3 HTTP/1.1\r\nHost: t\r\n\r\n", close_early=True),
                _stalled_head(port),
            )
            assert sum(a.startswith(b"HTTP/1.1 200") for a in answers) == 21
            assert answers[21].startswith(b"HTTP/1.1 400")
            assert answers[23].startswith(b"HTTP/1.1 408")
            # the early leaver, the timeout and the lingering closes play out
            await await_until(lambda: (state.clients, state.reading, state.writing), "every client connection closed",
                              accept=lambda open_: open_ == (0, 0, 0), timeout=10, interval=0.05)
            pool = group.keepalive_pool
            assert state.upstreams == len(pool)  # only parked keep-alive connections remain open
            assert all(s.active == 0 for s in group.servers)  # least_conn's counts balanced
            # 22: the early leaver's FIN reads as a half-close (a client may still await its answer), so it was answered
            state.tally.fold()  # what the requests' slots hold, into the keyed tallies the flusher takes
            answered = {(upstream, klass): n for (_, upstream, klass), n in state.tally.requests.counts.items()}
            assert answered[("app", 2)] == 22
            assert state.counters[(Event.HTTP_REJECTED, "400", "")] == 1
            assert state.counters[(Event.TIMEOUT, "client_header", "")] == 1
            pool.close_all()
            await await_until(lambda: state.upstreams, "the pool's connections closed", accept=lambda n: n == 0,
                              timeout=10, interval=0.02)
    finally:
        backend.close()
