"""The host side of placement: which CPUs this process may use and how busy each one is."""

from __future__ import annotations

import os
from collections.abc import Mapping

import psutil

from ukproxy.vm.placement.model import CpuNode


def usable_cpus() -> list[int]:
    """CPUs this process may run on (its affinity mask, which honours cgroups/taskset), in order."""
    return sorted(os.sched_getaffinity(0))


def sample_cpu_load(interval: float | None = None) -> dict[int, float]:
    """Percent busy per CPU id.

    With interval=None this is the load since the previous call (psutil keeps the last sample), so the
    very first call in a process returns zeros; pass a small interval to block and measure instead.
    """
    per_cpu = psutil.cpu_percent(interval=interval, percpu=True)
    return dict(enumerate(float(load) for load in per_cpu))


def host_nodes(
    max_vms_per_cpu: int, memory_mib_per_cpu: int, loads: Mapping[int, float] | None = None
) -> list[CpuNode]:
    """One empty node per usable CPU, with its load taken from `loads` (0 where unknown)."""
    loads = loads or {}
    return [
        CpuNode(cpu, max_vms_per_cpu, memory_mib_per_cpu, load_percent=loads.get(cpu, 0.0))
        for cpu in usable_cpus()
    ]
