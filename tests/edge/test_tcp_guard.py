"""allow/deny and limit_conn on tcp listeners (edge/tcp_guard.py), as nginx's stream module has them, through a
real two-worker ukproxy in front of a real backend: on the C relay (proxy/tcp_native.py) and on tcp.py
(`tcp_relay = "python"`), and after a PROXY header (the address it names is the client's)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.guard_proxy import Guarded, start_guarded
from tests.proxy.backends import RawBackend
from tests.running import ukproxy_check
from tests.waiting import wait_until
from ukproxy import native

RELAYS = ["native", "python"]
LIMIT = 2  # limit_conn per client address on the limited listeners


class Backend(RawBackend):
    """An echo server that remembers every connection it took (RawBackend counts them) and every byte it
    received."""

    def __init__(self) -> None:
        self.received = bytearray()
        super().__init__(self._echo)

    def _echo(self, conn: socket.socket, count: int) -> None:
        while data := conn.recv(65536):
            with self.lock:
                self.received += data
            conn.sendall(data)


def _listeners() -> str:
    out = ""
    for relay in RELAYS:
        out += f"""
[[limit_conn_zone]]
name = "tcp_{relay}"
key = "remote_addr"
size = "64k"

[[listen]]  # first match: 127.0.0.2 allowed, the rest of 127/8 denied
address = "127.0.0.1:{{port:access_{relay}}}"
upstream = "watched"
tcp_relay = "{relay}"
access = ["allow 127.0.0.2", "deny 127.0.0.0/8", "allow all"]

[[limit_conn_zone]]
name = "tcp_site_{relay}"
key = "site"

[[listen]]  # one connection at a time for the whole listener, whoever the client
address = "127.0.0.1:{{port:site_{relay}}}"
upstream = "echo"
tcp_relay = "{relay}"
limit_conn = {{zone = "tcp_site_{relay}", conn = 1}}

[[listen]]
address = "127.0.0.1:{{port:limited_{relay}}}"
upstream = "echo"
tcp_relay = "{relay}"
access = ["allow 127.0.0.0/8", "deny all"]
limit_conn = {{zone = "tcp_{relay}", conn = {LIMIT}}}
"""
    return out + """
[[listen]]  # the address a PROXY header names is the one the rules see (tcp.py: PROXY headers stay in Python)
address = "127.0.0.1:{port:proxied}"
upstream = "watched"
proxy_protocol = true
access = ["deny 192.0.2.0/24", "allow all"]

[[upstream]]
name = "watched"
servers = ["{watched}"]

[[upstream]]
name = "echo"
servers = ["{echo}"]
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    made = {"watched": Backend(), "echo": Backend()}
    yield made
    for b in made.values():
        b.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, backends: dict[str, Backend]) -> Iterator[Guarded]:
    g = start_guarded(tmp_path_factory.mktemp("tcpguard"), _listeners(), watched=backends["watched"].address,
                      echo=backends["echo"].address)
    yield g
    g.stop()


def _relay(request: pytest.FixtureRequest) -> str:
    relay: str = request.param
    if relay == "native" and native.load("tcp_relay") is None:
        pytest.skip("the C relay is not built")
    return relay


@pytest.fixture(params=RELAYS)
def relay(request: pytest.FixtureRequest) -> str:
    return _relay(request)


def _open(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s


def _answer(s: socket.socket, payload: bytes) -> bytes:
    """What comes back for `payload`: the echo, or b"" for a connection the proxy closed."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = s.recv(65536)
            if not data:
                break
            got += data
        return got
    return b""


def _relayed_in_c(proxy: Guarded, listener: str) -> float:
    return proxy.metric("ukproxy_worker_events_total", event=f"tcp_relayed_in_c:127.0.0.1:{proxy.ports[listener]}")


def _sessions(proxy: Guarded, listener: str, status: int) -> float:
    """Sessions of `listener` finished with nginx stream's $status `status` (403, 503 for the refused)."""
    return proxy.metric("ukproxy_tcp_sessions_total", listener=f"127.0.0.1:{proxy.ports[listener]}",
                        status=str(status))


def test_access_first_match_by_client_address(proxy: Guarded, backends: dict[str, Backend], relay: str) -> None:
    watched = backends["watched"]
    port = proxy.ports[f"access_{relay}"]
    refused_before = proxy.metric("ukproxy_edge_refused_total", rule="access", zone="")
    in_c_before = _relayed_in_c(proxy, f"access_{relay}")
    connections_before = watched.connections
    secret = f"denied-{relay}".encode()
    with _open(port) as s:  # 127.0.0.1: "deny 127.0.0.0/8"
        assert _answer(s, secret) == b""
    with _open(port, "127.0.0.2") as s:  # the first rule allows it
        assert _answer(s, b"allowed") == b"allowed"
    # The denied connection was closed before any connect: the backend took only the allowed one.
    assert watched.connections - connections_before == 1
    assert secret not in watched.received
    wait_until(lambda: proxy.metric("ukproxy_edge_refused_total", rule="access", zone="") - refused_before,
               "the refusal in ukproxy_edge_refused", accept=lambda n: n == 1)
    wait_until(lambda: _sessions(proxy, f"access_{relay}", 403), "the session logged 403", accept=lambda n: n == 1)
    if relay == "native":  # both sessions were the C relay's, the refused one too
        wait_until(lambda: _relayed_in_c(proxy, f"access_{relay}") - in_c_before, "two sessions relayed in C",
                   accept=lambda n: n == 2)


def test_limit_conn_across_workers_and_places_given_back(proxy: Guarded, backends: dict[str, Backend],
                                                         relay: str) -> None:
    echo = backends["echo"]
    port = proxy.ports[f"limited_{relay}"]
    zone = f"tcp_{relay}"
    refused_before = proxy.metric("ukproxy_edge_refused_total", rule="limit_conn", zone=zone)
    connections_before = echo.connections
    extra = 6  # eight connections: all on one worker (reuseport hashing) once in 128 runs
    # N + k connections at once, each its own (the kernel spreads them over both workers): N relayed, k closed.
    clients = [_open(port) for _ in range(LIMIT + extra)]
    try:
        answers = [_answer(s, b"hold") for s in clients]
        assert sorted(answers) == [b""] * extra + [b"hold"] * LIMIT, answers
        assert echo.connections - connections_before == LIMIT
        wait_until(lambda: proxy.metric("ukproxy_edge_refused_total", rule="limit_conn", zone=zone) - refused_before,
                   "the refusals in ukproxy_edge_refused", accept=lambda n: n == extra)
        wait_until(lambda: _sessions(proxy, f"limited_{relay}", 503), "the sessions logged 503",
                   accept=lambda n: n == extra)
    finally:
        for s in clients:
            s.close()
    # The holders closed: their places come back, for as many connections at once as the limit allows.
    def both_relayed() -> list[bytes]:
        again = [_open(port) for _ in range(LIMIT)]
        try:
            return [_answer(s, b"again") for s in again]
        finally:
            for s in again:
                s.close()

    wait_until(both_relayed, "the places given back", accept=lambda got: got == [b"again"] * LIMIT, timeout=5)


def test_a_zone_keyed_on_site_counts_every_client_together(proxy: Guarded, relay: str) -> None:
    port = proxy.ports[f"site_{relay}"]
    with _open(port) as holder:
        assert _answer(holder, b"one") == b"one"
        with _open(port, "127.0.0.2") as other:  # another address, the same key
            assert _answer(other, b"two") == b""
    wait_until(lambda: _answer_once(port, "127.0.0.2"), "the place given back", accept=lambda got: got == b"x")


def _answer_once(port: int, source: str) -> bytes:
    with _open(port, source) as s:
        return _answer(s, b"x")


def test_a_proxy_header_names_the_client_the_rules_see(proxy: Guarded, backends: dict[str, Backend]) -> None:
    watched = backends["watched"]
    port = proxy.ports["proxied"]
    connections_before = watched.connections
    with _open(port) as s:
        assert _answer(s, b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 80\r\nfrom-denied") == b""
    with _open(port) as s:
        s.sendall(b"PROXY TCP4 198.51.100.3 127.0.0.1 40001 80\r\n")
        assert _answer(s, b"from-allowed") == b"from-allowed"
    assert watched.connections - connections_before == 1
    assert b"from-denied" not in watched.received


BAD = """
[[limit_conn_zone]]
name = "byheader"
key = "header:X-Api-Key"

[[limit_req_zone]]
name = "rate"
rate = "1r/s"

[[listen]]
address = "127.0.0.1:18101"
upstream = "app"
access = ["allow 10.0.0.0/8", "deny all"]
limit_req = {zone = "rate"}
limit_conn = [{zone = "byheader", conn = 1, status = 503}]
auth_basic = "staff"

[[upstream]]
name = "app"
servers = ["127.0.0.1:9"]
"""


def test_http_only_keys_on_a_tcp_listener_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "tcp-guard.toml"
    config.write_text(BAD)
    result = ukproxy_check(config)
    assert result.returncode == 1
    expected = [
        ("listen[0].limit_req", "nginx's stream module has no limit_req"),
        ("listen[0].auth_basic", "a tcp listener has no requests"),
        ("listen[0].limit_conn[0].status", "a tcp listener answers nothing"),
        ("listen[0].limit_conn[0].zone", "a tcp connection has no headers"),
    ]
    lines = result.stderr.splitlines()
    for key, reason in expected:
        assert any(f"{config}: {key}: " in line and reason in line for line in lines), (key, reason, result.stderr)
    assert not any("listen[0].access" in line for line in lines), result.stderr  # allow/deny is a tcp rule too
