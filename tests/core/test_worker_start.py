"""A worker's start-up (ukproxy/worker_start.py): a signal sent before its handlers exist is held, not
fatal, and acted on once they do; a start that keeps using CPU is slow, not hung."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.core.test_tcp_proxy import tcp_config
from tests.running import RunningProxy, echo_servers, free_port
from tests.waiting import wait_until
from ukproxy.worker_start import HOLD_ENV, cpu_ticks


def writer_when_held(fifo: Path) -> int | None:
    """The FIFO's writing end once a worker holds its reading end (it is in worker_start.hold_for_tests)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def pending(pid: int) -> int:
    """The signals pending for process `pid` (a bit per signal), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("ShdPnd:"))


def test_quit_during_a_worker_start_is_held_then_graceful(ukproxy: Callable[..., RunningProxy], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A graceful stop that reaches a worker still starting (before its first import, here held there by
    the test hook) must not kill it: it starts, sees the QUIT, stops gracefully and exits 0."""
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    monkeypatch.setenv(HOLD_ENV, str(fifo))
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], workers=1)).start()
        writer = wait_until(lambda: writer_when_held(fifo), "the worker held at its start", context=proxy.log)
        try:
            (worker,) = proxy.workers()
            proxy.signal(signal.SIGQUIT)
            # The master passes the QUIT on; it waits, blocked, in the worker (or killed it, unfixed).
            wait_until(lambda: pending(worker.pid) & (1 << (signal.SIGQUIT - 1)) or not worker.is_running()
                       or worker.status() == "zombie", "the QUIT to reach the held worker", context=proxy.log)
        finally:
            os.close(writer)  # the worker goes on starting
        assert proxy.wait(20) == 0
        log = proxy.log()
        assert f"worker 0 (pid {worker.pid}) exited with code 0" in log, log
        assert "worker 0: graceful stop" in log


def test_start_progress_is_cpu_time() -> None:
    """What the master reads to tell a slow start from a hung one: a busy process's CPU time grows, a
    blocked one's does not."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        # Once the idle one waits in its read (the kernel says where it sleeps), it uses no more CPU.
        wait_until(lambda: Path(f"/proc/{idle.pid}/wchan").read_text(), "the idle process blocked reading",
                   accept=lambda where: "pipe" in where)
        idle_ticks, start = cpu_ticks(idle.pid), cpu_ticks(busy.pid)
        assert idle_ticks is not None and start is not None
        wait_until(lambda: cpu_ticks(busy.pid), "the busy process's CPU time to grow",
                   accept=lambda t: t is not None and t > start + 2)
        assert cpu_ticks(idle.pid) == idle_ticks
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    assert cpu_ticks(busy.pid) is None  # reaped: gone
