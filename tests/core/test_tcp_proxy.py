"""TCP (L4) proxying through a real ukproxy master: bytes, half-close, concurrency, dead upstreams."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import socket
from collections.abc import Callable

from tests.running import RunningProxy, echo_servers, exchange, free_port


def tcp_config(port: int, servers: list[int], workers: int = 2, extra: str = "", upstream_extra: str = "") -> str:
    listed = ", ".join(f'"127.0.0.1:{p}"' for p in servers)
    return f"""
workers = {workers}
{extra}
[[listen]]
address = "127.0.0.1:{port}"
upstream = "u"
[[upstream]]
name = "u"
servers = [{listed}]
connect_timeout = "1s"
{upstream_extra}
"""


def test_several_mib_byte_exact_both_ways(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(2) as backends:
        ukproxy(tcp_config(port, [b.port for b in backends])).start([port])
        payload = os.urandom(8 * 1024 * 1024)
        back = exchange(port, payload)
        assert len(back) == len(payload)
        assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()


def test_half_close_leaves_the_other_direction_open(ukproxy: Callable[..., RunningProxy]) -> None:
    """The upstream answers only after the client's EOF arrives; the answer must still get through."""
    port = free_port()
    backend = socket.create_server(("127.0.0.1", 0))
    bport = backend.getsockname()[1]
    ukproxy(tcp_config(port, [bport])).start([port])
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"question")
    client.shutdown(socket.SHUT_WR)
    backend.settimeout(10)
    got = b""
    while not got:  # skip the connection that start()'s readiness probe made through the proxy
        conn, _ = backend.accept()
        conn.settimeout(10)
        while chunk := conn.recv(100):
            got += chunk
    assert got == b"question"  # the EOF reached the upstream...
    conn.sendall(b"answer after your EOF")  # ...and the way back is still open
    conn.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := client.recv(100):
        answer += chunk
    assert answer == b"answer after your EOF"
    for s in (client, conn, backend):
        s.close()


def test_many_concurrent_connections(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(2) as backends:
        ukproxy(tcp_config(port, [b.port for b in backends])).start([port])
        payloads = [os.urandom(20_000 + i) for i in range(200)]
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda p: exchange(port, p), payloads))
        assert results == payloads
        # Smooth round robin over two equal servers: both took a real share.
        assert all(b.connections >= 50 for b in backends), [b.connections for b in backends]


def test_down_upstream_is_skipped_and_all_down_closes(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    dead = free_port()  # nothing listens here
    with echo_servers(1) as (alive,):
        proxy = ukproxy(tcp_config(port, [dead, alive.port], workers=1)).start([port])
        for _ in range(6):
            assert exchange(port, b"ping") == b"ping"  # the dead server is tried, then the next one
        assert alive.connections == 6
    # Now nothing is up: the client's connection is closed with nothing sent back.
    assert exchange(port, b"ping") == b""
    assert "no server could be reached" in proxy.log()


def test_idle_timeout_closes_a_silent_connection(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        ukproxy(tcp_config(port, [b.port], workers=1, upstream_extra='idle_timeout = "300ms"')).start([port])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"x")
            assert s.recv(10) == b"x"
            assert s.recv(10) == b""  # closed by the proxy once idle


