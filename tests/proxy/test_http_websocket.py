"""WebSocket through the proxy: the 101 is relayed and bytes are spliced both ways."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.proxy.clients import RawClient, get


async def test_websocket_echo_through_the_proxy(shared_proxy):
    backend, port = shared_proxy.backend, shared_proxy.port
    before = backend.requests[("GET", "/ws")]
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
        for i in range(50):
            await ws.send_str(f"hello {i}")
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.data == f"hello {i}"
        big = bytes(range(256)) * 4096  # 1 MiB frame: flow control in the tunnel
        await ws.send_bytes(big)
        message = await asyncio.wait_for(ws.receive(), 30)
        assert message.data == big
        await ws.close()
    assert backend.requests[("GET", "/ws")] - before == 1


def test_declined_upgrade_is_an_ordinary_response_then_close(shared_proxy):
    port = shared_proxy.port
    with RawClient(port) as client:
        response = client.request(get("/plain", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        assert response.status == 200
        assert response.body == b"backend GET /plain"
        assert client.closed()


def test_upgrade_with_a_body_is_refused(shared_proxy):
    backend, port = shared_proxy.backend, shared_proxy.port
    before = backend.total()
    with RawClient(port) as client:
        response = client.request(
            b"POST /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nab"
        )
        assert response.status == 400
    assert backend.total() == before
