"""/metrics after real TCP traffic through several workers: counts add up, live gauges follow the workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.observability.helpers import Scrape, exchange, scrape, status, tcp_config, wait_until
from tests.running import RunningProxy, echo_servers, free_port


def test_counts_add_up_across_workers_and_match_the_clients(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport = free_port(), free_port()
    with echo_servers(2) as backends:
        # reuseport: the kernel spreads connections over both workers' sockets.
        proxy = ukproxy(tcp_config(port, mport, [b.port for b in backends], extra="reuseport = true"))
        proxy.start([port, mport], expect_workers=2)
        payloads = [os.urandom(1000 + 37 * i) for i in range(60)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda p: exchange(port, p), payloads))
        assert answers == payloads
        n, total = len(payloads), sum(map(len, payloads))

        page = wait_until(lambda: scrape(mport), "every session in /metrics",
                          accept=lambda p: p.value("ukproxy_tcp_sessions_total") >= n)
        assert page.value("ukproxy_connections_accepted_total") == n
        assert page.value("ukproxy_connections_handled_total") == n
        assert page.value("ukproxy_tcp_sessions_total") == n
        assert page.value("ukproxy_tcp_sessions_total", status="200", upstream="u") == n
        assert page.value("ukproxy_tcp_sent_bytes_total") == total
        assert page.value("ukproxy_tcp_received_bytes_total") == total
        assert page.value("ukproxy_connections_active") == 0
        assert sum(b.connections for b in backends) == n

        per_worker = page.by_label("ukproxy_worker_accepted_connections", "pid")
        assert set(per_worker) == {str(w.pid) for w in proxy.workers()}
        assert sum(per_worker.values()) == n
        assert all(v > 0 for v in per_worker.values()), per_worker  # both workers carried traffic
        assert page.value("ukproxy_workers") == 2
        assert page.value("ukproxy_build_info") == 1


def test_unreachable_upstream_counts_failures_and_502_sessions(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport, dead = free_port(), free_port(), free_port()  # nothing listens on `dead`
    ukproxy(tcp_config(port, mport, [dead], workers=1, upstream_extra="tries = 1")).start([port, mport], 1)
    for _ in range(3):
        assert exchange(port, b"hello") == b""
    page = wait_until(lambda: scrape(mport), "3 sessions", accept=lambda p: p.value("ukproxy_tcp_sessions_total") >= 3)
    assert page.value("ukproxy_tcp_sessions_total", status="502") == 3
    assert page.value("ukproxy_upstream_failures_total", upstream="u", reason="connect") == 3
    assert page.value("ukproxy_upstream_unavailable_total", upstream="u") == 3
    assert page.value("ukproxy_upstream_retries_total") == 0


def _hold(port: int) -> socket.socket:
    """A connection that stays open, proven spliced by one echoed byte."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    return s


def test_killed_worker_leaves_no_stale_live_gauges(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport = free_port(), free_port()
    held = 12
    with echo_servers(1) as backends, contextlib.ExitStack() as stack:
        proxy = ukproxy(tcp_config(port, mport, [backends[0].port], extra="reuseport = true"))
        proxy.start([port, mport], expect_workers=2)
        for _ in range(held):
            stack.enter_context(_hold(port))
        page = wait_until(lambda: scrape(mport), f"{held} active connections",
                          accept=lambda p: p.value("ukproxy_connections_active") == held)
        assert page.value("ukproxy_connections_active", state="writing") == held
        per_pid = page.by_label("ukproxy_worker_connections", "pid")
        victim = max(per_pid, key=lambda pid: per_pid[pid])
        lost = per_pid[victim]
        assert lost > 0

        os.kill(int(victim), signal.SIGKILL)
        proxy.wait_workers(2, exclude={int(victim)})

        def settled(p: Scrape) -> bool:
            pids = p.by_label("ukproxy_worker_connections", "pid")
            return victim not in pids and len(pids) == 2 and p.value("ukproxy_worker_restarts_total") == 1

        page = wait_until(lambda: scrape(mport), "the dead worker gone from the live gauges", accept=settled)
        # Its connections leave the live sums; what it counted stays in the totals.
        assert page.value("ukproxy_connections_active") == held - lost
        assert page.value("ukproxy_worker_connections") == held - lost
        assert page.value("ukproxy_connections_accepted_total") == held
        live = {str(w.pid) for w in proxy.workers()}
        assert set(page.by_label("ukproxy_worker_accepted_connections", "pid")) == live
        # Its counter files were folded into the master's archive, not left behind one set per pid.
        metrics_dir = Path(re.search(r"run directory (\S+)", proxy.log()).group(1)) / "metrics"  # type: ignore[union-attr]
        left = {p.name for p in metrics_dir.glob("*.db")}
        assert f"counter_{victim}.db" not in left and f"histogram_{victim}.db" not in left, left
        assert "counter_archive.db" in left


def test_metrics_listener_answers_while_the_data_path_streams(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport = free_port(), free_port()
    streams = 40
    stop = threading.Event()
    opened = threading.Semaphore(0)

    def stream() -> None:
        chunk = os.urandom(65536)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            opened.release()
            while not stop.is_set():
                s.sendall(chunk)
                got = 0
                while got < len(chunk):
                    got += len(s.recv(len(chunk) - got))

    with echo_servers(1) as backends:
        ukproxy(tcp_config(port, mport, [backends[0].port], extra="reuseport = true")).start([port, mport], 2)
        threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
        for t in threads:
            t.start()
        try:
            for _ in range(streams):
                assert opened.acquire(timeout=30)
            pages = [scrape(mport) for _ in range(20)]  # each one must answer (within urllib's 10 s bound)
            assert all(p.value("ukproxy_build_info") == 1 for p in pages)
            busy = wait_until(lambda: scrape(mport), "every stream visible while they stream",
                              accept=lambda p: p.value("ukproxy_connections_active") == streams)
            assert busy.value("ukproxy_tcp_sent_bytes_total") == 0  # sessions still open: counted when they end
        finally:
            stop.set()
            for t in threads:
                t.join(30)


def test_metric_files_half_made_are_skipped_and_all_removed_at_stop(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport = free_port(), free_port()
    with echo_servers(1) as backends:
        proxy = ukproxy(tcp_config(port, mport, [backends[0].port], workers=1)).start([port, mport], 1)
        directory = Path(proxy.workers()[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert directory.is_dir()
        # What a process killed right after creating its file leaves behind: an empty file.
        (directory / "counter_999999.db").touch()
        assert exchange(port, b"ping") == b"ping"
        page = wait_until(lambda: scrape(mport), "the session",
                          accept=lambda p: p.value("ukproxy_tcp_sessions_total") == 1)
        assert page.value("ukproxy_workers") == 1
        assert status(mport)["accepts"] == 1
        proxy.stop()
        assert not directory.exists()
