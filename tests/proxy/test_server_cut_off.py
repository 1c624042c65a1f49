"""A server that goes away (its VM died) is cut off at once: a request on its way to it, or a connect
to it, fails now and goes to the next server, instead of waiting out a read or connect timeout.

In-process, so the test can call `Server.cut_off` as the VM pool does when the master reports a death.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractAsyncContextManager

from tests.proxy.backends import Backend, RawBackend, blackhole, silent_after
from tests.proxy.in_process import InProcessProxy, in_process_http
from tests.waiting import await_until
from ukproxy.protocol import Event

# Without the cut-off these requests would wait for the read timeout (60 s) or connect timeout (30 s).
CUT_OFF_ANSWER = 10.0


def proxy_to(first: str, backup: str, upstream_extra: str = "") -> AbstractAsyncContextManager[InProcessProxy]:
    """An in-process http listener whose upstream is `first`, with `backup` behind it."""
    return in_process_http(f'["{first}", {{address = "{backup}", backup = true}}]', upstream_extra)


async def get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    try:
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


async def test_a_request_in_flight_to_a_server_cut_off_goes_to_the_next() -> None:
    heard = threading.Event()
    gone, backup = RawBackend(silent_after(0, heard)), Backend("backup")
    try:
        async with proxy_to(gone.address, backup.address) as proxy:
            answer = asyncio.ensure_future(get(proxy.port, "/page"))
            await await_until(heard.is_set, "the server to hear the request")
            assert len(proxy.group.servers[0].attached) == 1  # the connection carrying the request
            assert proxy.group.servers[0].cut_off() == 1
            response = await asyncio.wait_for(answer, CUT_OFF_ANSWER)
            assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"backup GET /page")
            assert proxy.group.servers[0].attached == set()
    finally:
        gone.close()
        backup.close()


async def test_a_reused_keepalive_connection_cut_off_is_not_retried_on_its_server() -> None:
    # A reused connection that fails before any answer is normally retried once on a fresh connection
    # to the same server (it may have been closed as we reused it); not when the server is gone.
    heard = threading.Event()
    gone, backup = RawBackend(silent_after(1, heard)), Backend("backup")
    try:
        async with proxy_to(gone.address, backup.address) as proxy:
            assert (await get(proxy.port, "/one")).endswith(b"first")
            answer = asyncio.ensure_future(get(proxy.port, "/two"))  # on the pooled connection
            await await_until(heard.is_set, "the server to hear the request")
            proxy.group.servers[0].cut_off()
            response = await asyncio.wait_for(answer, CUT_OFF_ANSWER)
            assert response.endswith(b"backup GET /two")
            assert gone.connections == 1  # no fresh connection to the server that went away
            assert proxy.state.counters.get((Event.HTTP_STALE_KEEPALIVE, "app", ""), 0) == 0  # nor an attempt at one
    finally:
        gone.close()
        backup.close()


async def test_a_connect_to_a_server_cut_off_goes_to_the_next() -> None:
    backup = Backend("backup")
    try:
        with blackhole() as address:
            async with proxy_to(address, backup.address, 'connect_timeout = "30s"') as proxy:
                answer = asyncio.ensure_future(get(proxy.port, "/page"))
                await await_until(lambda: len(proxy.group.servers[0].attached) == 1, "the connect under way")
                assert not answer.done()  # and without the cut-off it would wait out connect_timeout (30 s)
                proxy.group.servers[0].cut_off()
                response = await asyncio.wait_for(answer, CUT_OFF_ANSWER)
                assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"backup GET /page")
    finally:
        backup.close()


async def test_a_request_that_cannot_be_replayed_gets_a_502() -> None:
    heard = threading.Event()
    gone, backup = RawBackend(silent_after(0, heard)), Backend("backup")
    try:
        async with proxy_to(gone.address, backup.address) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab")
            await await_until(heard.is_set, "the server to hear the request")
            proxy.group.servers[0].cut_off()
            response = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert response.startswith(b"HTTP/1.1 502")  # a body that went out is never sent twice
            assert backup.total() == 0
    finally:
        gone.close()
        backup.close()
