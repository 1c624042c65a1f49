"""The PROXY protocol: honoured only on listeners that enable it (v1 from curl --haproxy-protocol and by
hand, v2 as bytes written here), refused elsewhere, and sent to tcp upstreams that ask for it."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.edge.rules_proxy import curl, edge_config, log_lines, start
from tests.proxy.backends import Backend
from tests.running import EchoServer, free_port, wait_for_port
from ukproxy.config import ConfigError, loads

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(source: tuple[str, int] | None, destination: tuple[str, int] | None, tlv: bytes = b"") -> bytes:
    """A PROXY v2 header, written out per HAProxy's proxy-protocol.txt (section 2.2): PROXY or LOCAL."""
    if source is None or destination is None:
        return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlv)) + tlv
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlv
    return SIGNATURE + bytes([0x21, 0x11 if src.version == 4 else 0x21]) + struct.pack("!H", len(body)) + body


def talk(port: int, data: bytes, pieces: int = 1) -> bytes:
    """Send `data` (in `pieces`), half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            s.sendall(data[i:i + step])
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


GET = b"GET /headers HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n"


class Site:
    def __init__(self, ports: list[int], log: Path):
        self.http_pp, self.http_plain, self.tcp_pp, self.tcp_plain, self.http_quick, self.http2_pp = ports
        self.log = log


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("proxy_protocol")
    backend, echo = Backend("app"), EchoServer()
    log = tmp / "access.log"

    def config(ports: list[int]) -> str:
        return edge_config(ports[0], backend.address, log=log, listen="proxy_protocol = true") + f"""
[[listen]]
address = "127.0.0.1:{ports[1]}"
protocol = "http"
upstream = "app"
[[listen]]
address = "127.0.0.1:{ports[2]}"
protocol = "tcp"
upstream = "echo_v2"
proxy_protocol = true
[[listen]]
address = "127.0.0.1:{ports[3]}"
protocol = "tcp"
upstream = "echo_v1"
[[listen]]
address = "127.0.0.1:{ports[4]}"
protocol = "http"
upstream = "app"
proxy_protocol = true
proxy_protocol_timeout = "300ms"
[[listen]]
address = "127.0.0.1:{ports[5]}"
protocol = "http"
upstream = "app"
proxy_protocol = true
http2 = true
[[upstream]]
name = "echo_v2"
servers = ["127.0.0.1:{echo.port}"]
proxy_protocol = "v2"
[[upstream]]
name = "echo_v1"
servers = ["127.0.0.1:{echo.port}"]
proxy_protocol = "v1"
"""

    proxy, ports = start(tmp, config, 6)
    yield Site(ports, log)
    proxy.stop()
    backend.close()
    echo.stopping = True
    echo.sock.close()


def _real_ip(answer: bytes) -> str:
    body = answer.split(b"\r\n\r\n", 1)[1]
    return next(v for n, v in json.loads(body)["headers"] if n == "X-Real-IP")


def test_curl_haproxy_protocol_on_a_listener_that_takes_it(site: Site) -> None:
    assert curl(f"http://127.0.0.1:{site.http_pp}/headers", "--haproxy-protocol").status == 200


def test_a_v1_header_names_the_client(site: Site) -> None:
    answer = talk(site.http_pp, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n" + GET.replace(b"/headers",
                                                                                              b"/headers?v1"), 3)
    assert _real_ip(answer) == "203.0.113.7"
    assert log_lines(site.log, "/headers?v1")[0].startswith("203.0.113.7 ")


def test_a_v2_header_names_the_client(site: Site) -> None:
    header = v2(("2001:db8::7", 40000), ("::1", 80), tlv=b"\x04\x00\x02ok")  # a NOOP TLV is skipped
    assert _real_ip(talk(site.http_pp, header + GET, 4)) == "2001:db8::7"
    assert _real_ip(talk(site.http_pp, v2(None, None) + GET)) == "127.0.0.1"  # LOCAL: the connection's own


def h2_get_after(port: int, proxy_header: bytes, path: str) -> tuple[bytes, bytes]:
    """One HTTP/2 request with prior knowledge (the h2 library), after a PROXY header: (status, body)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"pp.test"),
                          (b":path", path.encode())], end_stream=True)
    status, body = b"", b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(proxy_header + conn.data_to_send())
        while data := s.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body
            s.sendall(conn.data_to_send())
    raise AssertionError(f"the connection closed before the answer (status {status!r})")


def test_an_http2_listener_passes_the_address_to_either_version(site: Site) -> None:
    status, body = h2_get_after(site.http2_pp, b"PROXY TCP4 203.0.113.8 127.0.0.1 40000 80\r\n", "/headers")
    assert status == b"200"
    assert [v for n, v in json.loads(body)["headers"] if n == "X-Real-IP"] == ["203.0.113.8"]
    http1 = talk(site.http2_pp, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n" + GET)  # or HTTP/1.1
    assert _real_ip(http1) == "203.0.113.9"


def test_haproxy_send_proxy_v2_is_honoured(site: Site, tmp_path: Path) -> None:
    """A real sender: HAProxy in front, `send-proxy-v2` to the listener; curl comes from 127.0.0.5."""
    port = free_port()
    (tmp_path / "haproxy.cfg").write_text(f"""
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend edge
    bind 127.0.0.1:{port}
    default_backend ukproxy
backend ukproxy
    server u 127.0.0.1:{site.http_pp} send-proxy-v2
""")
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        r = curl(f"http://127.0.0.1:{port}/headers", "--interface", "127.0.0.5")
        assert r.upstream_headers("X-Real-IP") == ["127.0.0.5"]  # not HAProxy's 127.0.0.1
    finally:
        haproxy.terminate()
        haproxy.wait(10)


def test_no_header_or_a_bad_one_is_a_400_where_one_is_expected(site: Site) -> None:
    assert talk(site.http_pp, GET).startswith(b"HTTP/1.1 400 ")
    assert talk(site.http_pp, b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n" + GET).startswith(b"HTTP/1.1 400 ")
    assert talk(site.http_pp, b"PROXY " + b"x" * 200).startswith(b"HTTP/1.1 400 ")  # longer than a v1 line
    with socket.create_connection(("127.0.0.1", site.http_quick), timeout=10) as s:  # says nothing
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")  # answered within proxy_protocol_timeout
    assert len(log_lines(site.log, '"- - -" 400 ', 4)) >= 4  # each refusal is in the access log


def test_a_proxy_header_where_none_is_expected_is_a_bad_request(site: Site) -> None:
    answer = talk(site.http_plain, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n" + GET)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert talk(site.http_plain, v2(("203.0.113.7", 1), ("127.0.0.1", 2)) + GET).startswith(b"HTTP/1.1 400 ")
    assert _real_ip(talk(site.http_plain, GET)) == "127.0.0.1"


def test_tcp_listener_takes_v1_and_the_upstream_gets_v2(site: Site) -> None:
    answer = talk(site.tcp_pp, b"PROXY TCP4 198.51.100.9 127.0.0.1 41000 443\r\npayload")
    expected = v2(("198.51.100.9", 41000), ("127.0.0.1", 443))
    assert answer == expected + b"payload"  # the echo server returns what it got: the header, then the bytes
    assert log_lines(site.log, "198.51.100.9 ")[0].startswith("198.51.100.9 - - ")


def test_tcp_upstream_gets_v1_naming_the_real_client(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.tcp_plain), timeout=10) as s:
        port = s.getsockname()[1]
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received == b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\nhello" % (port, site.tcp_plain)


def test_proxy_protocol_config_is_checked() -> None:
    with pytest.raises(ConfigError) as e:
        loads("""
[[listen]]
address = "127.0.0.1:9"
protocol = "http"
upstream = "app"
proxy_protocol = "yes"
[[listen]]
address = "127.0.0.1:10"
protocol = "http"
upstream = "app"
proxy_protocol_timeout = "1s"
[[upstream]]
name = "app"
servers = ["127.0.0.1:9"]
proxy_protocol = "v1"
""", "pp.toml")
    issues = [str(i) for i in e.value.issues]
    for expected in [
        "pp.toml: listen[0].proxy_protocol: expected true or false",
        "pp.toml: listen[1].proxy_protocol_timeout: is for a listener with proxy_protocol = true",
        "pp.toml: upstream[0].proxy_protocol: upstream 'app' serves http",
    ]:
        assert any(issue.startswith(expected) for issue in issues), (expected, issues)
