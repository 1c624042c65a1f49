"""How long and how often: the full run (~12 min on 2 cores) and --quick (~1 min)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    reps: int  # every figure is the median of this many interleaved runs (min and max kept)
    wrk_seconds: float
    connections: tuple[int, ...]  # wrk sweep against the native backend
    main_connections: int  # the row of the summary table
    ab_connections: int
    ab_requests: int
    ab_seconds: float
    mode_connections: tuple[int, ...]  # accept_mutex on/off/reuseport
    vm_connections: tuple[int, ...]
    boots: int
    cold_samples: int
    kill_samples: int
    workers: int = len(os.sched_getaffinity(0))


FULL = Settings(reps=3, wrk_seconds=3, connections=(1, 16, 64, 256, 512), main_connections=64,
                ab_connections=32, ab_requests=20000, ab_seconds=2, mode_connections=(64, 256),
                vm_connections=(1, 32), boots=30, cold_samples=3, kill_samples=3)

QUICK = Settings(reps=1, wrk_seconds=2, connections=(64,), main_connections=64,
                 ab_connections=32, ab_requests=5000, ab_seconds=1.5, mode_connections=(64,),
                 vm_connections=(32,), boots=5, cold_samples=1, kill_samples=1)
