"""tcp listeners on the C relay (ukproxy/native/tcp_relay.c, proxy/tcp_native.py) through a real ukproxy.

Behaviour only, so every test but the first passes on the Python path too (UKPROXY_PURE_PYTHON=1, which CI
runs for tests/proxy): backpressure with bounded memory, half close both ways, idle timeout, the next
upstream after a refused connect, a client gone while its upstream connects, no descriptor left, and a
graceful stop with connections open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.core.test_tcp_proxy import tcp_config
from tests.observability.helpers import scrape
from tests.proxy.backends import blackhole
from tests.running import EchoServer, RunningProxy, exchange, free_port, ukproxy_check
from tests.waiting import wait_until
from ukproxy import native

NATIVE = native.load("tcp_relay") is not None  # the proxy we start inherits our environment


@dataclass
class Rig:
    proxy: RunningProxy
    echo: EchoServer
    port: int  # to the echo server
    idle_port: int  # idle_timeout 300ms
    retry_port: int  # a refused server first, then the echo server
    stuck_port: int  # a server whose accept queue is full: connects hang
    half_port: int  # to `half`, a backend the test drives
    half: socket.socket
    metrics: int
    python_port: int  # to the echo server, with tcp_relay = "python"

    def worker(self) -> psutil.Process:
        (worker,) = self.proxy.wait_workers(1)
        return worker


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    echo = EchoServer()
    half = socket.create_server(("127.0.0.1", 0))
    held = contextlib.ExitStack()
    stuck = held.enter_context(blackhole())  # connects to it hang
    ports = [free_port() for _ in range(7)]
    port, idle_port, retry_port, stuck_port, half_port, python_port, metrics = ports
    closed = socket.socket()  # bound, never listening: its port refuses, and no one else can take it meanwhile
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    e, h = echo.port, half.getsockname()[1]
    listens = "".join(f'[[listen]]\naddress = "127.0.0.1:{p}"\nupstream = "{u}"\n' for p, u in
                      ((port, "echo"), (idle_port, "idle"), (retry_port, "retry"), (stuck_port, "stuck"),
                       (half_port, "half"), (python_port, "echo")))
    listens += 'tcp_relay = "python"\n'  # on the last listener
    # The accept mutex's mode: Python accepts and hands each connection to the relay (the benches' mode,
    # accepting in C, is every other tcp test's).
    config = f"""workers = 1
accept_mutex = true
multi_accept = true
{listens}
[[upstream]]
name = "echo"
servers = ["127.0.0.1:{e}"]
[[upstream]]
name = "idle"
servers = ["127.0.0.1:{e}"]
idle_timeout = "300ms"
[[upstream]]
name = "retry"
servers = ["127.0.0.1:{refused}", "127.0.0.1:{e}"]
[[upstream]]
name = "stuck"
servers = ["{stuck}"]
connect_timeout = "2s"
[[upstream]]
name = "half"
servers = ["127.0.0.1:{h}"]
[metrics]
listen = "127.0.0.1:{metrics}"
"""
    proxy = RunningProxy(tmp_path_factory.mktemp("tcp_native"), config)
    try:
        proxy.start(ports, expect_workers=1)
        yield Rig(proxy, echo, port, idle_port, retry_port, stuck_port, half_port, half, metrics, python_port)
    finally:
        proxy.stop()
        echo.close()
        for sock in (half, closed):
            sock.close()
        held.close()


def open_fds(worker: psutil.Process) -> int:
    return len(os.listdir(f"/proc/{worker.pid}/fd"))


@pytest.mark.skipif(not NATIVE, reason="the C relay is not built, or UKPROXY_PURE_PYTHON=1")
def test_the_c_relay_serves_the_tcp_listeners(rig: Rig) -> None:
    assert exchange(rig.port, b"through C") == b"through C"
    assert f"tcp listener 127.0.0.1:{rig.port}: relayed in C" in rig.proxy.log()
    page = wait_until(lambda: scrape(rig.metrics), "the session counted as relayed in C",
                      accept=lambda p: p.value("ukproxy_worker_events_total",
                                               event=f"tcp_relayed_in_c:127.0.0.1:{rig.port}") >= 1)
    assert page.value("ukproxy_tcp_sessions_total", upstream="echo", status="200") >= 1
    # tcp_relay = "python" keeps a listener on proxy/tcp.py: served, and not counted as relayed in C
    assert exchange(rig.python_port, b"through Python") == b"through Python"
    assert f'tcp listener 127.0.0.1:{rig.python_port}: relayed in Python (tcp_relay = "python")' in rig.proxy.log()
    wait_until(lambda: scrape(rig.metrics).value("ukproxy_tcp_sessions_total", listener=f"127.0.0.1:{rig.python_port}"),
               "the Python session counted", accept=lambda n: n >= 1)
    assert scrape(rig.metrics).value("ukproxy_worker_events_total",
                                     event=f"tcp_relayed_in_c:127.0.0.1:{rig.python_port}") == 0


def test_a_slow_reader_holds_the_sender_back_and_memory_stays_bounded(rig: Rig) -> None:
    warm = os.urandom(8 * 1024 * 1024)  # the worker's first big transfer grows its heap once, on either path
    assert exchange(rig.port, warm) == warm
    worker = rig.worker()
    rss_before = worker.memory_info().rss
    payload = os.urandom(64 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", rig.port), timeout=20) as client:
        sent = [0]

        def send() -> None:
            view = memoryview(payload)
            while sent[0] < len(payload):
                sent[0] += client.send(view[sent[0]:sent[0] + 65536])
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        # Nobody reads: the sender must come to a stop, every buffer on the way full and nothing more taken.
        seen: list[int] = []

        def stalled() -> bool:
            seen.append(sent[0])
            return len(seen) >= 6 and seen[-1] == seen[-6] > 0

        wait_until(stalled, "the sender held back", interval=0.1)
        assert sent[0] < len(payload), "64 MiB went in with no one reading: no backpressure"
        grown = worker.memory_info().rss - rss_before
        assert grown < 24 * 1024 * 1024, f"the worker grew {grown} bytes while the reader slept"
        digest, received = hashlib.sha256(), 0
        while chunk := client.recv(1 << 20):
            digest.update(chunk)
            received += len(chunk)
        sender.join(10)
    assert received == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_half_close_passes_the_servers_eof_and_keeps_the_clients_way_open(rig: Rig) -> None:
    client = socket.create_connection(("127.0.0.1", rig.half_port), timeout=10)
    client.sendall(b"hello")
    rig.half.settimeout(10)
    backend, _ = rig.half.accept()
    backend.settimeout(10)
    with client, backend:
        assert backend.recv(100) == b"hello"
        backend.shutdown(socket.SHUT_WR)  # the server is done talking...
        assert client.recv(100) == b""  # ...the client hears its EOF...
        client.sendall(b"still here")  # ...and may still speak
        got = b""
        while len(got) < 10:
            got += backend.recv(100)
        assert got == b"still here"
        client.shutdown(socket.SHUT_WR)
        assert backend.recv(100) == b""  # both ways done


def test_idle_timeout_closes_a_silent_connection_and_is_counted(rig: Rig) -> None:
    before = scrape(rig.metrics).value("ukproxy_timeouts_total", timeout="idle")
    with socket.create_connection(("127.0.0.1", rig.idle_port), timeout=10) as s:
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        assert s.recv(10) == b""  # closed by the proxy once idle
    wait_until(lambda: scrape(rig.metrics).value("ukproxy_timeouts_total", timeout="idle"), "the idle timeout counted",
               accept=lambda n: n > before)


def test_a_refused_connect_goes_to_the_next_server(rig: Rig) -> None:
    payloads = [os.urandom(3000 + i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda p: exchange(rig.retry_port, p), payloads)) == payloads
    page = wait_until(lambda: scrape(rig.metrics), "the refused connect counted",
                      accept=lambda p: p.value("ukproxy_upstream_failures_total", upstream="retry") >= 1)
    assert page.value("ukproxy_upstream_failures_total", upstream="retry", reason="connect") >= 1
    assert page.value("ukproxy_upstream_retries_total", upstream="retry") >= 1
    wait_until(lambda: scrape(rig.metrics).value("ukproxy_tcp_sessions_total", upstream="retry", status="200"),
               "every session answered", accept=lambda n: n >= len(payloads))


def test_a_client_gone_while_its_upstream_connects_leaves_nothing(rig: Rig) -> None:
    worker = rig.worker()
    baseline = open_fds(worker)
    clients = []
    for _ in range(5):
        c = socket.create_connection(("127.0.0.1", rig.stuck_port), timeout=10)
        c.sendall(b"waiting for a server")
        clients.append(c)
    wait_until(lambda: open_fds(worker), "the connects under way", accept=lambda n: n >= baseline + 10)
    for c in clients:  # a reset, not a FIN: the client is gone
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    # Within connect_timeout (2 s) plus slack on either path: nothing left, the slots given back.
    wait_until(lambda: open_fds(worker), "every descriptor closed", accept=lambda n: n <= baseline, timeout=10)
    wait_until(lambda: scrape(rig.metrics).value("ukproxy_connections_active"), "no connection open",
               accept=lambda n: n == 0)


def test_many_connections_opened_and_closed_leave_no_descriptor(rig: Rig) -> None:
    worker = rig.worker()
    baseline = open_fds(worker)
    payloads = [os.urandom(100 + i) for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(lambda p: exchange(rig.port, p), payloads)) == payloads
    wait_until(lambda: open_fds(worker), f"the worker back to {baseline} descriptors", accept=lambda n: n <= baseline)


def test_a_graceful_stop_lets_open_connections_finish(ukproxy: Callable[..., RunningProxy]) -> None:
    port, echo = free_port(), EchoServer()
    try:
        proxy = ukproxy(tcp_config(port, [echo.port], workers=1, extra='worker_shutdown_timeout = "20s"')).start([port])
        (worker,) = proxy.wait_workers(1)
        client = socket.create_connection(("127.0.0.1", port), timeout=30)  # a worker may start slowly under load
        client.sendall(b"before")
        assert client.recv(100) == b"before"
        proxy.signal(signal.SIGQUIT)
        wait_until(lambda: "graceful stop" in proxy.log(), "the worker told to stop", context=proxy.log)
        client.sendall(b"after the stop")  # the open connection is still relayed
        got = b""
        while len(got) < 14:
            got += client.recv(100)
        assert got == b"after the stop"
        assert worker.is_running()
        client.close()  # its last connection gone, the worker exits before worker_shutdown_timeout
        assert proxy.wait(15) == 0
        assert not worker.is_running()
    finally:
        echo.close()


def test_check_names_a_tcp_relay_that_cannot_apply(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[[listen]]\naddress = "127.0.0.1:1"\nprotocol = "http"\nupstream = "u"\ntcp_relay = "python"\n'
                      '[[listen]]\naddress = "127.0.0.1:2"\nupstream = "u"\ntcp_relay = "c"\n'
                      '[[upstream]]\nname = "u"\nservers = ["127.0.0.1:3"]\n')
    result = ukproxy_check(config)
    assert result.returncode != 0
    assert str(config) in result.stderr
    assert "listen[0].tcp_relay: is for a tcp listener" in result.stderr, result.stderr
    assert "listen[1].tcp_relay" in result.stderr and "'native', 'python'" in result.stderr, result.stderr
