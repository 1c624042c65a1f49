"""Limits and timeouts: each one fires with its status (or a quiet close) and leaves the proxy serving."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.proxy.backends import blackhole, read_head
from tests.proxy.clients import RawClient, get, status_of
from tests.proxy.conftest import SharedProxy, backend_behind_a_proxy
from tests.waiting import wait_until

LIMITS = 'max_uri_size = 100\nmax_headers = 5\nmax_header_size = "1k"\nclient_max_body_size = "1k"'


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedProxy]:
    """One proxy with the size and count limits for the tests that only hit them."""
    with backend_behind_a_proxy(tmp_path_factory.mktemp("limits"), http=LIMITS) as shared:
        yield shared


def test_size_and_count_limits(limited):
    port = limited.port
    assert status_of(port, get("/" + "a" * 99)) == 200
    assert status_of(port, get("/" + "a" * 100)) == 414
    assert status_of(port, get("/", extra="".join(f"X-{i}: v\r\n" for i in range(4)))) == 200
    assert status_of(port, get("/", extra="".join(f"X-{i}: v\r\n" for i in range(5)))) == 431
    assert status_of(port, get("/", extra=f"X-Big: {'v' * 1100}\r\n")) == 431
    assert status_of(port, b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024) == 200
    assert status_of(port, b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025) == 413
    chunked = b"POST /sha HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n"
    assert status_of(port, chunked * 1 + b"200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n") == 200
    assert status_of(port, chunked + (b"200\r\n" + b"x" * 512 + b"\r\n") * 2 + b"0\r\n\r\n") == 413


def test_a_header_line_that_never_ends_is_cut_off(limited):
    backend, port = limited.backend, limited.port
    before = backend.total()
    with RawClient(port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        try:
            for _ in range(64):  # 64 KiB of one value without its CRLF
                client.send(b"v" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        responses = client.responses(1)
        assert responses and responses[0].status == 431
    assert backend.total() == before


def test_client_header_timeout(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http="client_header_timeout = 0.5")
    with RawClient(port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        responses = client.responses(1)
        assert responses and responses[0].status == 408
        assert client.closed()
    with RawClient(port) as client:  # a connection that never says anything is closed too
        assert client.closed()
    assert backend.total() == 0


def test_client_body_timeout(backends, http_proxy):
    backend = backends()
    proxy, port = http_proxy([backend.address], http="client_body_timeout = 0.5")
    with RawClient(port) as client:
        client.send(b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        responses = client.responses(1)
        assert responses and responses[0].status == 408
        assert client.closed()
    # A client that takes none of our writes gets the same timeout (no send_timeout key): its connection is cut.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /bytes/16000000 HTTP/1.1\r\nHost: t\r\n\r\n")  # past what the sockets buffer
        wait_until(lambda: "took none of our writes" in proxy.log(), "the stalled client cut off")
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert received < 16_000_000


def test_keepalive_timeout_closes_an_idle_client(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http="keepalive_timeout = 0.5")
    with RawClient(port) as client:
        assert client.request(get("/")).status == 200
        assert client.closed()
        assert client.responses(1) == []  # closed quietly, no 408


def test_upstream_read_timeout_is_504(backends, http_proxy):
    backend = backends()
    proxy, port = http_proxy([backend.address], upstream_extra="read_timeout = 0.5\ntries = 1")
    assert status_of(port, get("/sleep/5")) == 504
    assert status_of(port, get("/fine")) == 200
    assert "read_timeout" in proxy.log()


def test_upstream_connect_timeout_is_504(http_proxy):
    with blackhole() as address:
        proxy, port = http_proxy([address], upstream_extra="connect_timeout = 0.5\ntries = 1")
        assert status_of(port, get("/")) == 504, proxy.log()
        assert "connect_timeout" in proxy.log()


def test_upstream_send_timeout_is_504(raw_backends, http_proxy):
    stop = threading.Event()

    def never_reads(conn, _count):
        read_head(conn)
        stop.wait(20)

    backend = raw_backends(never_reads)
    proxy, port = http_proxy([backend.address], http='client_max_body_size = "64m"',
                             upstream_extra="send_timeout = 0.5\ntries = 1")
    client = RawClient(port, timeout=20)
    body = b"x" * (32 * 1024 * 1024)

    def upload() -> None:
        with contextlib.suppress(OSError):
            client.send(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        responses = client.responses(1)
        assert responses and responses[0].status == 504
        assert "send_timeout" in proxy.log()
    finally:
        stop.set()
        client.close()
        uploader.join(10)


def test_proxy_keeps_serving_after_every_limit(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http=LIMITS + "\nclient_header_timeout = 0.5")
    for bad in (get("/" + "a" * 200), get("/", extra=f"X: {'v' * 2000}\r\n"), b"GET / HTTP/1.1\r\nHost"):
        with contextlib.suppress(OSError):
            status_of(port, bad)
    assert status_of(port, get("/still-here")) == 200
