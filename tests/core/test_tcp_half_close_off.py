"""`half_close = false` on a tcp upstream: the server's EOF ends the pair (nginx stream's default), while
the default passes it on and keeps the client's way open (tests/core/test_tcp_proxy.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from tests.core.test_tcp_proxy import tcp_config
from tests.running import RunningProxy, free_port, ukproxy_check


def _accept_past_probe(backend: socket.socket) -> socket.socket:
    """The upstream side of our client's connection: start()'s readiness probe connected first and sent
    nothing, so skip connections that close without a byte."""
    while True:
        conn, _ = backend.accept()
        conn.settimeout(10)
        first = conn.recv(100)
        if first:
            assert first == b"question"
            return conn
        conn.close()


def test_server_eof_closes_both_sides_without_waiting_for_the_client(
        ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    backend = socket.create_server(("127.0.0.1", 0))
    backend.settimeout(10)
    ukproxy(tcp_config(port, [backend.getsockname()[1]], workers=1,
                       upstream_extra="half_close = false")).start([port])
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"question")  # and no EOF: the client's way stays open on its side
    conn = _accept_past_probe(backend)
    conn.sendall(b"the whole answer")
    conn.shutdown(socket.SHUT_WR)
    assert conn.recv(100) == b""  # ukproxy closed the upstream connection, with the client still open
    answer = b""
    while chunk := client.recv(100):  # all of the answer, then EOF: what was buffered was sent first
        answer += chunk
    assert answer == b"the whole answer"
    for s in (client, conn, backend):
        s.close()


def test_check_names_a_half_close_that_is_not_a_boolean(tmp_path: Path) -> None:
    config = tmp_path / "ukproxy.toml"
    config.write_text(tcp_config(free_port(), [free_port()], upstream_extra='half_close = "no"'))
    result = ukproxy_check(config)
    assert result.returncode != 0
    assert "half_close" in result.stderr and str(config) in result.stderr
