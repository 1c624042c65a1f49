"""Slow and random clients: they cannot starve the others, and nothing they send kills a worker."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proxy.clients import status_of
from tests.proxy.conftest import backend_behind_a_proxy
from tests.running import RunningProxy


def test_slowloris_clients_do_not_starve_the_others(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], workers=2, http="client_header_timeout = 3")
    slow: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            slow.append(s)

        def trickle() -> None:
            while not stop.is_set():
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"v")
                stop.wait(0.2)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        for i in range(50):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/normal/{i}")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, f"backend GET /normal/{i}".encode())
            conn.close()
        stop.set()
        trickler.join(10)
        # every slow client is cut off by the header timeout: a 408 or a close, never a forwarded request
        for s in slow:
            s.settimeout(15)
            data = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(4096):
                    data += chunk
            assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
        assert backend.requests[("GET", "/")] == 0
    finally:
        stop.set()
        for s in slow:
            s.close()


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Iterator[tuple[RunningProxy, int, set[int]]]:
    http = "client_header_timeout = 2\nkeepalive_timeout = 2"
    with backend_behind_a_proxy(tmp_path, workers=2, http=http) as shared:
        yield shared.proxy, shared.port, {w.pid for w in shared.proxy.workers()}


METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"get", b"G\x00T", b""])
TARGETS = st.sampled_from([b"/", b"/echo", b"/sha", b"*", b"http://t/x", b"/a b", b"/%00", b"//", b"/ws"])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 ", b"", b"HTTX/1.1"])
HEADER_NAMES = st.sampled_from([
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"Expect", b"X-Any", b"",
    b"Content-Length ", b"Host\x00",
])
HEADER_VALUES = st.one_of(
    st.sampled_from([b"t", b"chunked", b"0", b"5", b"-1", b"99999999999999999999", b"close", b"upgrade",
                     b"websocket", b"100-continue", b"keep-alive", b"chunked, gzip", b"a\rb", b"a\nb"]),
    st.binary(max_size=20),
)
LINE_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n "])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    end = draw(LINE_ENDS)
    line = draw(METHODS) + b" " + draw(TARGETS) + b" " + draw(VERSIONS) + b"\r\n"
    headers = b"".join(draw(HEADER_NAMES) + b": " + draw(HEADER_VALUES) + draw(LINE_ENDS)
                       for _ in range(draw(st.integers(0, 6))))
    body = draw(st.binary(max_size=64))
    message = line + headers + end + body
    if draw(st.booleans()):  # sometimes cut, splice or corrupt it
        cut = draw(st.integers(0, len(message)))
        message = message[:cut] + draw(st.binary(max_size=16)) + message[cut:]
    return message * draw(st.integers(1, 3))


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(requests(), st.binary(min_size=1, max_size=300)))
def send_fuzz(port: int, data: bytes) -> None:
    """Hypothesis's examples, each on a connection of its own; called with a port, it runs them all."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, contextlib.suppress(OSError):
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # EOF lets the proxy finish without waiting for a timeout
        s.settimeout(5)
        while s.recv(65536):
            pass


def test_fuzzed_requests_never_kill_a_worker(fuzz_target):
    # One test, so that the survival check always follows the fuzz it checks, whatever else runs.
    proxy, port, pids = fuzz_target
    send_fuzz(port)
    assert len(pids) == 2
    for _ in range(10):
        assert status_of(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") == 200
    assert {w.pid for w in proxy.workers()} == pids
    log = proxy.log()
    assert "Traceback" not in log and "exited" not in log, log[-3000:]
