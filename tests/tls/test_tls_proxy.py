"""TLS termination on an http listener, with real clients: curl and openssl s_client against one running
ukproxy of two workers (SNI, resumption, protocol limits, HSTS, X-Forwarded-Proto, the redirect), and
the bad input a TLS port meets, each ended cleanly, counted, and leaking nothing."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.helpers import scrape
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.clients import curl, s_client
from tests.tls.conftest import Certificates, tls_keys
from tests.waiting import wait_until
from ukproxy.tls.context import TICKETS_PER_HANDSHAKE

FAILURES = "ukproxy_tls_handshake_failures_total"


class Site:
    def __init__(self, proxy: RunningProxy, port: int, tls13_port: int, plain_port: int, metrics_port: int,
                 backend: Backend, access_log: Path):
        self.proxy, self.port, self.tls13_port, self.plain_port = proxy, port, tls13_port, plain_port
        self.metrics_port, self.backend, self.access_log = metrics_port, backend, access_log

    def failures(self, reason: str) -> float:
        return scrape(self.metrics_port).value(FAILURES, reason=reason, listener=f"127.0.0.1:{self.port}")

    def open_connections(self) -> float:
        return scrape(self.metrics_port).value("ukproxy_worker_connections")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("tls-proxy")
    backend = Backend("app")
    port, tls13_port, plain_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    access_log = tmp / "access.log"
    config = f"""
workers = 2
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
access_log = "{access_log}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
{tls_keys(certs.ec)}
hsts = "max-age=600"
ssl_handshake_timeout = "1s"
[[listen.sni]]
server_names = ["rsa.test"]
ssl_certificate = "{certs.rsa.cert}"
ssl_certificate_key = "{certs.rsa.key}"
[[listen.sni]]
server_names = ["*.wild.test"]
ssl_certificate = "{certs.wild.cert}"
ssl_certificate_key = "{certs.wild.key}"
[[listen]]
address = "127.0.0.1:{tls13_port}"
protocol = "http"
upstream = "app"
{tls_keys(certs.ec)}
ssl_protocols = "TLSv1.3"
[[listen]]
address = "127.0.0.1:{plain_port}"
protocol = "http"
upstream = "app"
https_redirect = {port}
[[upstream]]
name = "app"
servers = ["{backend.address}"]
"""
    proxy = RunningProxy(tmp, config, "tls").start([port, tls13_port, plain_port, metrics_port], expect_workers=2)
    try:
        yield Site(proxy, port, tls13_port, plain_port, metrics_port, backend, access_log)
    finally:
        proxy.stop()
        backend.close()


def test_curl_gets_the_upstream_answer_with_hsts_and_https_forwarded(site: Site, certs: Certificates) -> None:
    run = curl(f"https://localhost:{site.port}/headers", certs.ca.cert, "--resolve", f"localhost:{site.port}:127.0.0.1")
    assert run.returncode == 0, run.stderr
    head, _, body = run.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 200")
    assert "Strict-Transport-Security: max-age=600" in head
    seen = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert seen["x-forwarded-proto"] == "https"
    line = wait_until(lambda: [ln for ln in site.access_log.read_text().splitlines() if "/headers" in ln]
                      if site.access_log.exists() else [], "the request in the access log")[0]
    assert '"GET /headers HTTP/1.1"' in line and line.endswith("tls=TLSv1.3")


def test_sni_chooses_the_certificate(site: Site, certs: Certificates) -> None:
    default = s_client(site.port, certs.ca.cert, servername=None)
    assert default.done and "CN = localhost" in default.subject and default.key_bits == "256"
    rsa = s_client(site.port, certs.ca.cert, servername="rsa.test")
    assert rsa.done and "CN = rsa.test" in rsa.subject and rsa.key_bits == "2048"
    wild = s_client(site.port, certs.ca.cert, servername="api.wild.test")
    assert wild.done and "CN = *.wild.test" in wild.subject
    unknown = s_client(site.port, certs.ca.cert, servername="a.b.wild.test")  # one label only: the default
    assert unknown.done and "CN = localhost" in unknown.subject


def test_sessions_resume_whichever_worker_takes_them(site: Site, certs: Certificates, tmp_path: Path) -> None:
    """Two workers behind SO_REUSEPORT: each connection lands on either (by the kernel's hash), and every one
    resumes. (test_tls_reload shows it deterministically: new worker processes resume an old session.)"""
    for version in ("-tls1_3", "-tls1_2"):
        session = tmp_path / f"session{version}.pem"
        first = s_client(site.port, certs.ca.cert, version, "-sess_out", str(session))
        assert first.done and not first.reused, first.output
        for _ in range(6):
            again = s_client(site.port, certs.ca.cert, version, "-sess_in", str(session))
            assert again.reused, again.output
    wait_until(lambda: scrape(site.metrics_port).value("ukproxy_tls_resumptions_total"), "12 resumptions counted",
               accept=lambda n: n >= 12)


def test_one_ticket_per_tls13_handshake(site: Site, certs: Certificates, tmp_path: Path) -> None:
    """TICKETS_PER_HANDSHAKE (OpenSSL's default is 2), on the default context and on one chosen by SNI,
    and the one ticket resumes."""
    session = tmp_path / "session.pem"
    for servername in ("localhost", "rsa.test"):
        first = s_client(site.port, certs.ca.cert, "-tls1_3", "-msg", "-sess_out", str(session), servername=servername)
        assert first.done and first.output.count(", NewSessionTicket") == TICKETS_PER_HANDSHAKE, first.output
        again = s_client(site.port, certs.ca.cert, "-tls1_3", "-msg", "-sess_in", str(session), servername=servername)
        assert again.reused, again.output


def test_protocol_limits(site: Site, certs: Certificates) -> None:
    assert s_client(site.port, certs.ca.cert, "-tls1_2").protocol == "TLSv1.2"
    assert s_client(site.port, certs.ca.cert, "-tls1_3").protocol == "TLSv1.3"
    before = site.failures("protocol_version")
    assert not s_client(site.port, certs.ca.cert, "-tls1_1").done  # not in the default TLSv1.2 TLSv1.3
    wait_until(lambda: site.failures("protocol_version"), "the refused TLS 1.1 counted", accept=lambda n: n > before)
    assert s_client(site.tls13_port, certs.ca.cert, "-tls1_3").protocol == "TLSv1.3"
    assert not s_client(site.tls13_port, certs.ca.cert, "-tls1_2").done


def test_plain_http_listener_redirects_to_https(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.plain_port), timeout=10) as s:
        s.sendall(b"GET /a/b?c=1 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n")
        head = s.recv(4096).split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 301")
    assert f"Location: https://example.test:{site.port}/a/b?c=1".encode() in head


def _read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_bad_input_ends_cleanly_counted_and_leaks_nothing(site: Site, certs: Certificates) -> None:
    pids = {w.pid for w in site.proxy.workers()}
    before = {r: site.failures(r) for r in ("plain_http", "not_tls", "no_shared_cipher", "timeout", "client_closed")}
    hello = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    try:
        hello.do_handshake()
    except ssl.SSLWantReadError:
        client_hello = out.read()
    # plain HTTP to the TLS port: nginx's 400
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(s).startswith(b"HTTP/1.1 400")
    # neither TLS nor HTTP: closed
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        s.sendall(b"\x00\x01\x02 not a protocol")
        assert _read_until_closed(s) == b""
    # a client hello with nothing in common (a TLS 1.3 suite the server does not enable)
    assert not s_client(site.port, certs.ca.cert, "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256").done
    # stalls: nothing at all, and half a client hello; each cut at the 1 s handshake deadline
    silent = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    halfway = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    halfway.sendall(client_hello[: len(client_hello) // 2])
    started = time.monotonic()
    assert _read_until_closed(silent) == b"" and _read_until_closed(halfway) == b""
    assert time.monotonic() - started < 8
    silent.close()
    halfway.close()
    # vanishing mid-handshake
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as s:
        s.sendall(client_hello[:40])
    after = {
        "plain_http": 1, "not_tls": 1, "no_shared_cipher": 1, "timeout": 2, "client_closed": 1,
    }
    for reason, n in after.items():
        wait_until(lambda r=reason: site.failures(r), f"{n} more {reason} counted",
                   accept=lambda v, r=reason, n=n: v >= before[r] + n)
    wait_until(site.open_connections, "no connection left open", accept=lambda n: n == 0)
    assert {w.pid for w in site.proxy.workers()} == pids  # no worker died
    handshakes = s_client(site.port, certs.ca.cert)
    assert handshakes.done  # and the port still serves
