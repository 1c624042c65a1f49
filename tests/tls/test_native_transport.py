"""The C TLS engine (ukproxy/native/tls_transport.c) as its clients meet it: which listeners it serves,
a client that stops reading (the protocol pauses, the upstream waits), TLS records cut in pieces,
close_notify both ways, and, with the accept mutex (the engine adopts what Python accepted), a reload
that swaps the certificate under an open connection. Skipped where the module is not built or
UKPROXY_PURE_PYTHON=1: tests/tls and tests/h2 cover the uvloop path then."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.helpers import scrape
from tests.proxy.backends import Backend, RawBackend, pattern, read_head
from tests.running import RunningProxy, free_port
from tests.tls.clients import client_context, read_response, s_client
from tests.tls.conftest import Certificates, https_listener, install, tls_keys, upstream_block
from tests.waiting import wait_until
from ukproxy import native

pytestmark = pytest.mark.skipif(native.load("tls_transport") is None, reason="the C TLS engine is not built")

BIG = 64 * 1024 * 1024  # more than every socket buffer on the way and the transport's high-water mark together
CHUNK = 256 * 1024


class Streamer:
    """An upstream answering every request with BIG bytes of `pattern`, counting what its socket took."""

    def __init__(self) -> None:
        self.sent = 0
        self.lock = threading.Lock()
        self.body = pattern(CHUNK, seed=7)
        self.raw = RawBackend(self._handle)

    def _handle(self, conn: socket.socket, count: int) -> None:
        if b"\r\n\r\n" not in read_head(conn):
            return
        conn.settimeout(None)  # the sends below wait on a client that stops reading for as long as a test says
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % BIG)
        for _ in range(BIG // CHUNK):
            conn.sendall(self.body)
            with self.lock:
                self.sent += CHUNK


class Site:
    def __init__(self, proxy: RunningProxy, port: int, python_port: int, stream_port: int, metrics_port: int,
                 streamer: Streamer):
        self.proxy, self.port, self.python_port, self.stream_port = proxy, port, python_port, stream_port
        self.metrics_port, self.streamer = metrics_port, streamer

    def handshakes(self, port: int) -> float:
        return scrape(self.metrics_port).value("ukproxy_tls_handshakes_total", listener=f"127.0.0.1:{port}",
                                               version="TLSv1.3")

    def open_connections(self) -> float:
        return scrape(self.metrics_port).value("ukproxy_worker_connections")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("tls-native")
    backend, streamer = Backend("app"), Streamer()
    port, python_port, stream_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    config = f"""
workers = 1
[log]
level = "info"
[metrics]
listen = "127.0.0.1:{metrics_port}"
{https_listener(port, tls_keys(certs.ec))}
{https_listener(python_port, tls_keys(certs.ec) + 'ssl_engine = "python"')}
{https_listener(stream_port, tls_keys(certs.ec), upstream="stream")}
{upstream_block("app", backend.address)}
{upstream_block("stream", streamer.raw.address)}
"""
    proxy = RunningProxy(tmp, config, "tls-native").start([port, python_port, stream_port, metrics_port],
                                                         expect_workers=1)
    try:
        yield Site(proxy, port, python_port, stream_port, metrics_port, streamer)
    finally:
        proxy.stop()
        backend.close()
        streamer.raw.close()


def test_the_engine_serves_tls_listeners_and_ssl_engine_python_keeps_uvloop(site: Site, certs: Certificates) -> None:
    log = wait_until(site.proxy.log, "the worker's word on its TLS listeners", accept=lambda t: "served in C" in t)
    assert f"tls 127.0.0.1:{site.port}: served in C" in log
    assert f"tls 127.0.0.1:{site.python_port}: served in C" not in log
    for port in (site.port, site.python_port):
        before = site.handshakes(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost") as conn:
            assert conn.version() == "TLSv1.3"
            conn.sendall(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head, body = read_response(conn)
            assert head.startswith(b"HTTP/1.1 200") and body == b"app GET /who"
        wait_until(lambda p=port: site.handshakes(p), f"the handshake on {port} counted",
                   accept=lambda n, b=before: n == b + 1)


def test_a_client_that_stops_reading_holds_the_upstream_back_and_then_gets_every_byte(site: Site,
                                                                                       certs: Certificates) -> None:
    raw = socket.create_connection(("127.0.0.1", site.stream_port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    with client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost") as conn:
        site.streamer.sent = 0
        conn.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # Until the upstream's sends stop going through (the same count for a second): each hop's buffer
        # full, and the transport's protocol told to pause writing, so the upstream is read no more.
        history: list[int] = []

        def held_back() -> bool:
            history.append(site.streamer.sent)
            return len(history) >= 20 and history[-1] > 0 and history[-1] == history[-20]

        wait_until(held_back, "the upstream held back by the stalled client", interval=0.05, timeout=30)
        held = site.streamer.sent
        assert held < BIG // 2, f"{held} bytes of {BIG} taken from the upstream while the client read nothing"
        digest, size = hashlib.sha256(), 0
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        _, _, rest = data.partition(b"\r\n\r\n")
        digest.update(rest)
        size += len(rest)
        while size < BIG:
            chunk = conn.recv(1 << 20)
            assert chunk, f"closed after {size} of {BIG} bytes"
            digest.update(chunk)
            size += len(chunk)
    expected = hashlib.sha256(site.streamer.body * (BIG // CHUNK)).hexdigest()
    assert size == BIG and digest.hexdigest() == expected


def _pump(sock: socket.socket, tls: ssl.SSLObject, out: ssl.MemoryBIO, pieces: tuple[int, ...]) -> None:
    """Send what the client's TLS wrote, cut at `pieces` (a record header split, a record split)."""
    data = out.read()
    at = 0
    for size in pieces:
        if at < len(data):
            sock.sendall(data[at:at + size])
            at += size
    sock.sendall(data[at:])


def _until(sock: socket.socket, incoming: ssl.MemoryBIO, step: object) -> object:
    """Run `step` (a call on the client's SSLObject) until it stops wanting bytes from the server."""
    while True:
        try:
            return step()  # type: ignore[operator]
        except ssl.SSLWantReadError:
            chunk = sock.recv(65536)
            if not chunk:
                incoming.write_eof()
            else:
                incoming.write(chunk)


def test_records_cut_in_pieces_and_close_notify_both_ways(site: Site, certs: Certificates) -> None:
    pieces = (1, 2, 3, 40)  # the record header alone, then the rest of a record in parts
    # the client says close_notify first: the server answers with its own and closes
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        incoming, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context(certs.ca.cert).wrap_bio(incoming, out, server_hostname="localhost")

        def handshake() -> None:
            try:
                tls.do_handshake()
            finally:
                _pump(sock, tls, out, pieces)

        _until(sock, incoming, handshake)
        tls.write(b"GET /pieces HTTP/1.1\r\nHost: localhost\r\n\r\n")
        _pump(sock, tls, out, pieces)
        answer = b""
        while not answer.endswith(b"app GET /pieces"):
            answer += _until(sock, incoming, lambda: tls.read(65536))  # type: ignore[operator]
        assert answer.startswith(b"HTTP/1.1 200")

        def unwrap() -> None:
            try:
                tls.unwrap()
            finally:
                _pump(sock, tls, out, ())

        _until(sock, incoming, unwrap)  # completes only on the server's close_notify
        assert sock.recv(1) == b""  # and then the server closed
    # the server closes first (Connection: close): close_notify before the FIN, no ragged EOF
    raw = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    with client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost",
                                                   suppress_ragged_eofs=False) as conn:
        conn.sendall(b"GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):  # SSLEOFError here if the close were not announced
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"app GET /last")
    wait_until(site.open_connections, "no connection left open", accept=lambda n: n == 0)


def test_adopted_connections_and_a_reload_that_swaps_the_certificate(tmp_path: Path, certs: Certificates) -> None:
    live = install(certs.ec, tmp_path)
    backend = Backend("app")
    port = free_port()
    proxy = RunningProxy(tmp_path, f"""
workers = 1
accept_mutex = true
[log]
level = "info"
[metrics]
enabled = false
{https_listener(port, tls_keys(live))}
{upstream_block("app", backend.address)}
""", "native-reload").start([port], expect_workers=1)
    try:
        old = {w.pid for w in proxy.workers()}
        wait_until(proxy.log, "the engine serving the listener", accept=lambda t: "served in C" in t)
        assert "CN = localhost" in s_client(port, certs.ca.cert).subject
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost") as open_conn:
            open_conn.sendall(b"GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(open_conn)[1] == b"app GET /before"
            install(certs.renewed, tmp_path)
            assert proxy.cli("reload").returncode == 0
            proxy.wait_workers(1, exclude=old)
            renewed = certs.renewed.cert.read_text()
            wait_until(lambda: s_client(port, certs.ca.cert, "-showcerts").output, "the renewed certificate served",
                       accept=lambda out: _pem(out) == _pem(renewed))
            # the connection from before the reload: still served, on the old certificate's worker
            open_conn.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert read_response(open_conn)[1] == b"app GET /after"
    finally:
        proxy.stop()
        backend.close()


def _pem(text: str) -> str:
    """The first PEM certificate in `text`."""
    start = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start)
    return text[start:end]
