"""Where a proxy's time goes: the CPU its processes used over one client run, per request.

A proxy is named by its root process (ukproxy's master, nginx's master, haproxy); its whole process tree
is counted (workers, threads), read from /proc/<pid>/stat (utime, stime in clock ticks) before and after
the run. Processes that came or went during the run count for what /proc showed of them at each end.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    user: float  # seconds
    system: float


def _stat_times(pid: int) -> tuple[float, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime (fields 14 and 15 of stat)


def tree_times(root: int) -> CpuTimes:
    """User and system seconds of `root` and every process under it, so far."""
    pids = [root]
    with contextlib.suppress(psutil.NoSuchProcess):
        pids += [p.pid for p in psutil.Process(root).children(recursive=True)]
    user = system = 0.0
    for pid in pids:
        t = _stat_times(pid)
        if t is not None:
            user += t[0]
            system += t[1]
    return CpuTimes(user, system)


def per_request_us(before: CpuTimes, after: CpuTimes, requests: int) -> dict[str, float]:
    """µs of CPU per request over a run: user, system and their sum (a tick is 10 ms: a short run is coarse)."""
    n = max(1, requests)
    user = (after.user - before.user) * 1e6 / n
    system = (after.system - before.system) * 1e6 / n
    return {"cpu_user_us": round(user, 2), "cpu_system_us": round(system, 2), "cpu_us": round(user + system, 2)}
