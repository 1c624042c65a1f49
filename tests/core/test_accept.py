"""Nginx's disabled counting and the cross-process accept mutex."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ukproxy.accept import AcceptMutex, DisabledCounter, accept_disabled


@pytest.mark.parametrize(
    ("worker_connections", "free", "expected"),
    [(1024, 1024, -896), (1024, 128, 0), (1024, 127, 1), (1024, 0, 128), (64, 8, 0), (64, 2, 6), (8, 0, 1)],
)
def test_accept_disabled_arithmetic(worker_connections: int, free: int, expected: int) -> None:
    assert accept_disabled(worker_connections, free) == expected


def test_disabled_counter_skips_then_competes() -> None:
    counter = DisabledCounter(64)
    counter.update(free_connections=5)  # 64/8 - 5 = 3 turns to skip
    assert [counter.should_skip() for _ in range(5)] == [True, True, True, False, False]
    assert counter.skips == 3
    counter.update(free_connections=60)
    assert not counter.should_skip()


def test_mutex_excludes_other_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "accept.lock")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the holder: takes the lock, says so, and waits to be killed
        m = AcceptMutex(path)
        os.write(w, b"1" if m.try_lock() else b"0")
        time.sleep(60)
        os._exit(0)
    try:
        assert os.read(r, 1) == b"1"
        mine = AcceptMutex(path)
        assert not mine.try_lock()
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        assert mine.try_lock()  # the kernel dropped the dead holder's lock
        assert mine.held
        mine.unlock()
        assert not mine.held
        mine.close()
    finally:
        os.close(r)
        os.close(w)
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
