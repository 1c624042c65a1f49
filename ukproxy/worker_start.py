"""A worker's start-up, from both sides: no signal lost or fatal before its handlers exist, and how the
master tells a slow start (a busy machine, seconds of imports) from a hung one (docs/architecture.md,
"Supervision").

Signals: as nginx does, the master blocks the signals it and its workers act on around the spawn, so
the new process starts (fork, exec, taskset's exec, the interpreter, every import) with them blocked.
A QUIT, TERM or USR1 sent in that time stays pending instead of taking its default action (death)
and is delivered once the worker's loop has its handlers (`unblock_in_worker`).

Progress: a worker says nothing to the master until it is ready. Until then the master judges it by
its CPU time: a start that keeps using CPU is slow, one that stopped using it is hung.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

# Everything either side handles; SIGCHLD too, so the master's own reaping waits out the fork.
HELD = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD}

HOLD_ENV = "UKPROXY_TEST_HOLD_START"  # tests only: a FIFO the worker reads to EOF before anything else


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Block HELD in this thread for the spawn; what arrives meanwhile is delivered on leaving."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def unblock_in_worker() -> None:
    """Called by the worker once its handlers are installed: pending signals are delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def hold_for_tests() -> None:
    """If HOLD_ENV names a FIFO, wait until a test has opened and closed its writing end. A test uses it
    to act (send a signal) at a known point of a worker's start-up; nothing in production sets it."""
    path = os.environ.get(HOLD_ENV)
    if path:
        with open(path, "rb") as fifo:  # opening blocks until the test opens the other end
            fifo.read()


def cpu_ticks(pid: int) -> int | None:
    """User plus system CPU time of `pid` in clock ticks (/proc/<pid>/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ", state is field 3 of proc(5)
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
