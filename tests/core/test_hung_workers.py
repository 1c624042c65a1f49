"""A hung worker (its loop no longer turns, here because it is SIGSTOPped) sends no heartbeat: the master
kills it, counts it, logs it and starts another in its slot, and new connections reach the new worker."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable

import psutil

from tests.core.test_accept_distribution import held_connections
from tests.core.test_tcp_proxy import tcp_config
from tests.observability.helpers import scrape, status
from tests.running import RunningProxy, echo_servers, exchange, free_port
from tests.waiting import wait_until

CONNECTIONS = 24  # enough that every one of two reuseport sockets gets some (the kernel hashes)


def served_by(pid: int, port: int) -> int:
    """Client connections to `port` that process `pid` holds."""
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def test_a_stopped_worker_is_killed_and_replaced(ukproxy: Callable[..., RunningProxy]) -> None:
    port, metrics_port = free_port(), free_port()
    extra = f'worker_heartbeat_timeout = "2s"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port])
        first = proxy.wait_workers(2)
        # Both ready, so both have spoken to the master: from now on a silence past the 2 s timeout is a
        # hang. A worker not heard from yet gets the 15 s start-up grace instead (master.START_GRACE),
        # which a worker stopped before its first message made this test wait out.
        wait_until(lambda: [w["state"] for w in status(metrics_port)["workers"]], "both workers ready",
                   accept=lambda states: states == ["ready", "ready"], context=proxy.log)
        victim, survivor = first
        victim.send_signal(signal.SIGSTOP)
        try:
            now = proxy.wait_workers(2, timeout=30, exclude={victim.pid})
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGCONT)
        assert not psutil.pid_exists(victim.pid) or psutil.Process(victim.pid).status() == psutil.STATUS_ZOMBIE
        fresh = next(w for w in now if w.pid != survivor.pid)
        assert survivor.pid in {w.pid for w in now}  # the healthy worker was left alone
        log = proxy.log()
        assert f"(pid {victim.pid}) hung: no heartbeat for" in log
        assert f"(pid {victim.pid}) died: killed by signal 9 (SIGKILL)" in log
        # The successor's connections wait in its inherited queue until it is up, which under load takes
        # longer than a client's timeout: it must be ready first.
        wait_until(lambda: [w["state"] for w in status(metrics_port)["workers"]], "the successor ready",
                   accept=lambda states: states == ["ready", "ready"], timeout=30, context=proxy.log)
        # The stopped worker's reuseport share of new connections went to its successor.
        with held_connections(port, CONNECTIONS, pause=0):
            assert served_by(fresh.pid, port) > 0
            assert served_by(fresh.pid, port) + served_by(survivor.pid, port) == CONNECTIONS
        assert exchange(port, b"still serving") == b"still serving"
        hung = wait_until(lambda: scrape(metrics_port).value("ukproxy_worker_hung_total"), "the hung-worker metric",
                          accept=lambda v: v >= 1)
        assert hung == 1



LATE = 1.2  # the master's own lateness: past the 1 s timeout, short of its 1.5 s stall rule (master.py)


def test_a_late_master_does_not_blame_its_workers(ukproxy: Callable[..., RunningProxy]) -> None:
    """The master's timer can fire before its loop reads the workers' channels: a master that was itself
    late (here SIGSTOPped, as a busy machine can deschedule it) finds the heartbeats waiting unread and
    must not count the time it did not listen as the workers' silence."""
    port, metrics_port = free_port(), free_port()
    extra = f'worker_heartbeat_timeout = "1s"\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port])
        workers = {w.pid for w in proxy.wait_workers(2)}
        wait_until(lambda: [w["state"] for w in status(metrics_port)["workers"]], "both workers ready",
                   accept=lambda states: states == ["ready", "ready"], context=proxy.log)
        master = psutil.Process(proxy.pid)
        for _ in range(3):
            master.send_signal(signal.SIGSTOP)
            try:
                time.sleep(LATE)  # the stimulus itself (how late the master is), not a wait for a condition
            finally:
                master.send_signal(signal.SIGCONT)
            # The timer's round runs as the master wakes, before it serves this scrape: judged by now.
            assert scrape(metrics_port).value("ukproxy_worker_hung_total") == 0, proxy.log()
        assert "hung: no heartbeat" not in proxy.log()
        assert {w.pid for w in proxy.workers()} == workers
        assert exchange(port, b"still served") == b"still served"
