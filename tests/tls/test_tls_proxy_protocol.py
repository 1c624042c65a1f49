"""`proxy_protocol = true` with `ssl = true`: a PROXY header (v1 or v2) before the TLS handshake names the client,
and the upstream hears that client in X-Forwarded-For and X-Real-IP ($remote_addr). The client is Python's
ssl (OpenSSL) on a socket that first sends the header, as a balancer in front (HAProxy's send-proxy) does."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.clients import client_context, read_response
from tests.tls.conftest import Certificates, https_listener, tls_keys, upstream_block

V1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"
V2 = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
      + socket.inet_aton("198.51.100.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40001, 443))


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("tls-pp")
    backend = Backend("app")
    port = free_port()
    config = ("workers = 1\n[metrics]\nenabled = false\n"
              + https_listener(port, tls_keys(certs.ec) + "proxy_protocol = true\n")
              + upstream_block("app", backend.address))
    proxy = RunningProxy(tmp, config, "tls-pp").start([port], expect_workers=1)
    try:
        yield port
    finally:
        proxy.stop()
        backend.close()


@pytest.mark.parametrize(("header", "client"), [(V1, "203.0.113.7"), (V2, "198.51.100.9")], ids=["v1", "v2"])
def test_the_proxy_headers_client_reaches_the_upstream(port: int, certs: Certificates, header: bytes,
                                                       client: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        with client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head, body = read_response(conn)
    assert head.startswith(b"HTTP/1.1 200"), head
    saw = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert saw["x-forwarded-for"] == client and saw["x-real-ip"] == client


def test_tls_without_the_header_is_refused(port: int, certs: Certificates) -> None:
    # the gate answers a plain 400 to bytes that are not a PROXY header: no handshake (ssl.SSLError is an OSError)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, pytest.raises(OSError):
        client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost")
