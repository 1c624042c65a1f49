"""Real client addresses ([real_ip]): forwarding headers believed only from trusted proxies, for the
access log, ip_hash and upstream headers; curl from different loopback addresses plays both peers."""

from __future__ import annotations

import http.client
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.rules_proxy import curl, edge_config, log_lines, start
from tests.proxy.backends import Backend
from ukproxy.config import ConfigError, HttpConfig, loads
from ukproxy.config_reader import Issues, Table
from ukproxy.edge.realip import RealIp
from ukproxy.edge.rules_config import read_real_ip
from ukproxy.proxy.http_request import HEAD, RequestReader

TRUSTED = "127.0.0.2"  # curl --interface: a trusted proxy; 127.0.0.1 is not


class Site:
    def __init__(self, url: str, log: Path, pair: tuple[Backend, Backend]):
        self.url = url
        self.log = log
        self.pair = pair


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("realip")
    app, a, b = Backend("app"), Backend("a"), Backend("b")
    log = tmp / "access.log"

    def config(ports: list[int]) -> str:
        return edge_config(ports[0], app.address, log=log) + f"""
[real_ip]
trusted_proxies = ["{TRUSTED}/32", "10.9.0.0/16"]
x_forwarded_host = true
forwarded = true
[[upstream]]
name = "pair"
balance = "ip_hash"
servers = ["{a.address}", "{b.address}"]
[[route]]
host = "pair.test"
upstream = "pair"
"""

    proxy, ports = start(tmp, config, 1)
    yield Site(f"http://127.0.0.1:{ports[0]}", log, (a, b))
    proxy.stop()
    for backend in (app, a, b):
        backend.close()


def test_a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(site: Site) -> None:
    r = curl(f"{site.url}/headers?forged", "-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Real-IP: 6.6.6.6",
             "-H", "Forwarded: for=6.6.6.6", "-H", "X-Forwarded-Host: evil.test", "-H", "Host: shop.test")
    assert r.upstream_headers("X-Real-IP") == ["127.0.0.1"]
    assert r.upstream_headers("X-Forwarded-For") == ["127.0.0.1"]  # the forged hop does not go upstream either
    assert r.upstream_headers("X-Forwarded-Host") == ["shop.test"]
    assert r.upstream_headers("Forwarded") == ['for=127.0.0.1;host="shop.test";proto=http']
    [line] = log_lines(site.log, "/headers?forged")
    assert line.startswith("127.0.0.1 ")


def test_a_trusted_proxy_names_the_client_rightmost_untrusted_first(site: Site) -> None:
    r = curl(f"{site.url}/headers?trusted", "--interface", TRUSTED, "-H", "X-Forwarded-For: 1.1.1.1, 6.6.6.6, 10.9.1.1",
             "-H", "Forwarded: for=6.6.6.6", "-H", "X-Forwarded-Host: shop.test", "-H", "Host: inner.test")
    assert r.upstream_headers("X-Real-IP") == ["6.6.6.6"]  # 10.9.1.1 is a trusted hop, 1.1.1.1 could be forged
    assert r.upstream_headers("X-Forwarded-For") == [f"1.1.1.1, 6.6.6.6, 10.9.1.1, {TRUSTED}"]
    assert r.upstream_headers("X-Forwarded-Host") == ["shop.test"]  # the trusted proxy's own is kept
    assert r.upstream_headers("Forwarded") == [f'for=6.6.6.6, for={TRUSTED};host="inner.test";proto=http']
    [line] = log_lines(site.log, "/headers?trusted")
    assert line.startswith("6.6.6.6 ")


def test_an_entry_that_is_no_address_ends_the_walk(site: Site) -> None:
    r = curl(f"{site.url}/headers", "--interface", TRUSTED, "-H", "X-Forwarded-For: 6.6.6.6, bogus")
    assert r.upstream_headers("X-Real-IP") == [TRUSTED]


def test_ip_hash_keys_on_the_real_client_address(site: Site) -> None:
    port = int(site.url.rsplit(":", 1)[1])

    def spread(source: str) -> set[str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        answers = set()
        for i in range(1, 17):  # one keep-alive connection, sixteen forwarded clients in different /24s
            conn.request("GET", "/who", headers={"Host": "pair.test", "X-Forwarded-For": f"10.{i}.0.1"})
            answers.add(conn.getresponse().read().decode().split()[0])
        conn.close()
        return answers

    assert spread("127.0.0.1") in ({"a"}, {"b"})  # from an untrusted peer the header is ignored: one server
    assert spread(TRUSTED) == {"a", "b"}  # clients behind a trusted proxy spread out


def _client(header: str, raw: bytes, peer: bytes = TRUSTED.encode()) -> bytes:
    issues = Issues("t")
    config = read_real_ip(Table({"real_ip": {"trusted_proxies": [f"{TRUSTED}/32", "2001:db8::/32"],
                                              "header": header}}, "", issues))
    assert not issues.found and config is not None
    events: deque = deque()
    RequestReader(HttpConfig(), events).feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + raw + b"\r\n")
    kind, head = events[0]
    assert kind == HEAD
    real_ip = RealIp.from_config(config)
    assert real_ip is not None
    return real_ip.client_ip(peer, head)


def test_x_real_ip_and_forwarded_headers() -> None:
    assert _client("X-Real-IP", b"X-Real-IP: 6.6.6.6\r\n") == b"6.6.6.6"
    assert _client("X-Real-IP", b"X-Real-IP: 6.6.6.6\r\n", peer=b"127.0.0.1") == b"127.0.0.1"
    assert _client("X-Real-IP", b"X-Real-IP: 6.6.6.6\r\n", peer=f"::ffff:{TRUSTED}".encode()) == b"6.6.6.6"
    forwarded = b'Forwarded: for=6.6.6.6, for="[2001:db8::1]:4711"\r\nForwarded: for="[2001:db8::2]"\r\n'
    assert _client("Forwarded", forwarded) == b"6.6.6.6"  # both v6 hops are trusted
    assert _client("Forwarded", b'Forwarded: for="[2001:db9::1]:80";proto=https\r\n') == b"2001:db9::1"
    assert _client("Forwarded", b"Forwarded: for=_hidden, for=7.7.7.7\r\n") == b"7.7.7.7"
    assert _client("Forwarded", b"Forwarded: proto=https\r\n") == TRUSTED.encode()  # no for=: an unknown hop


def test_bad_real_ip_and_request_id_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        loads("""
[[listen]]
address = "127.0.0.1:9"
protocol = "tcp"
upstream = "app"
[[upstream]]
name = "app"
servers = ["127.0.0.1:9"]
proxy_protocol = "v3"
[real_ip]
trusted_proxies = ["10.0.0.0/33", "proxy.example"]
header = "X-Client"
recursive = "yes"
[request_id]
header = "Content-Length"
keep_incoming = "sometimes"
echo = true
""", "bad.toml")
    issues = [str(i) for i in e.value.issues]
    for expected in [
        "bad.toml: upstream[0].proxy_protocol: expected \"v1\", \"v2\" or false, got 'v3'",
        "bad.toml: real_ip.trusted_proxies: item 0: not a CIDR",
        "bad.toml: real_ip.header: must be one of 'x-forwarded-for', 'x-real-ip', 'forwarded', got 'x-client'",
        "bad.toml: real_ip.recursive: expected true or false",
        "bad.toml: request_id.header: Content-Length is not for request ids",
        "bad.toml: request_id.keep_incoming: must be one of 'trusted', 'always', 'never'",
        "bad.toml: request_id.echo: unknown key",
    ]:
        assert any(issue.startswith(expected) for issue in issues), (expected, issues)
