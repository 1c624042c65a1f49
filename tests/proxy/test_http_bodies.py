"""Bodies streamed both ways, byte-exact: Content-Length, chunked, several MiB, read-until-close upstreams."""

from __future__ import annotations

import hashlib
import http.client
import socket
from collections.abc import Iterator

import pytest

from tests.proxy.backends import pattern, read_head
from tests.proxy.clients import RawClient, get
from tests.proxy.conftest import SharedProxy, backend_behind_a_proxy

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def shared_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedProxy]:
    """The module's one proxy takes bodies up to 64 MiB (the uploads); the downloads do not care."""
    with backend_behind_a_proxy(tmp_path_factory.mktemp("bodies"), http='client_max_body_size = "64m"') as shared:
        yield shared


def test_large_upload_with_content_length(shared_proxy):
    port = shared_proxy.port
    body = pattern(8 * MIB, seed=1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("PUT", "/sha", body=body)
    response = conn.getresponse()
    assert response.read().decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def test_large_chunked_upload_is_echoed_byte_exact(shared_proxy):
    port = shared_proxy.port
    body = pattern(5 * MIB + 17, seed=2)

    def chunks():
        for i in range(0, len(body), 70_001):
            yield body[i:i + 70_001]

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/echo", body=chunks(), encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.read() == body


def test_large_downloads_content_length_and_chunked(shared_proxy):
    port = shared_proxy.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path, n in (("/bytes", 6 * MIB), ("/chunks", 6 * MIB + 3)):
        conn.request("GET", f"{path}/{n}")
        response = conn.getresponse()
        assert response.read() == pattern(n)


def test_slow_reader_gets_everything_byte_exact(shared_proxy):
    """Flow control: a client that reads slowly holds the upstream back instead of piling it up in the proxy."""
    port = shared_proxy.port
    n = 16 * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.sendall(get(f"/bytes/{n}"))
        received = bytearray()
        while True:
            data = sock.recv(16 * 1024)
            if not data:
                break
            received += data
            if b"\r\n\r\n" in received and len(received) - received.index(b"\r\n\r\n") - 4 >= n:
                break
        head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == pattern(n)


def _until_close_backend(body: bytes):
    def handle(conn, _count):
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 65536):
            conn.sendall(body[i:i + 65536])
        conn.shutdown(socket.SHUT_WR)

    return handle


def test_read_until_close_upstream_is_rechunked_for_http11(raw_backends, http_proxy):
    body = pattern(300_000, seed=3)
    backend = raw_backends(_until_close_backend(body))
    _, port = http_proxy([backend.address])
    with RawClient(port) as client:
        first = client.request(get("/"))
        assert first.chunked_on_wire
        assert first.body == body
        # the client connection survives: the body had an end thanks to chunking
        assert client.request(get("/")).body == body


def test_read_until_close_upstream_closes_http10_client(raw_backends, http_proxy):
    body = pattern(100_000, seed=4)
    backend = raw_backends(_until_close_backend(body))
    _, port = http_proxy([backend.address])
    with RawClient(port) as client:
        response = client.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert not response.chunked_on_wire
        assert response.body == body
        assert client.closed()


def test_expect_100_continue(shared_proxy):
    port = shared_proxy.port
    with RawClient(port) as client:
        client.send(b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        interim = client.sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        client.send(b"abc")
        response = client.responses(1)[0]
        assert response.body.startswith(b"3 ")
