"""bench.cpu: a process tree's CPU from /proc, and per-request figures from two readings."""

import os
import subprocess
import sys
import time

import psutil

from bench.cpu import CpuTimes, per_request_us, tree_times


def test_per_request_splits_user_and_system():
    used = per_request_us(CpuTimes(1.0, 2.0), CpuTimes(1.5, 2.25), 1000)
    assert used == {"cpu_user_us": 500.0, "cpu_system_us": 250.0, "cpu_us": 750.0}
    assert per_request_us(CpuTimes(0, 0), CpuTimes(1, 0), 0)["cpu_us"] == 1e6  # no requests: no division by zero


def test_tree_times_counts_a_busy_grandchild():
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    # The shell stays (the trailing command keeps it from exec'ing python): the busy one is its child.
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; true', busy])
    try:
        deadline = time.monotonic() + 30
        seen = tree_times(shell.pid)
        while seen.user + seen.system < 0.45 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = tree_times(shell.pid)
        assert seen.user + seen.system >= 0.45
        assert tree_times(os.getpid()).user >= os.times().user - 0.02  # the caller itself counts too
    finally:
        for p in psutil.Process(shell.pid).children(recursive=True):
            p.kill()
        shell.kill()
        shell.wait()
