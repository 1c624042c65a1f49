"""The multiprocess directory: where every process's metric files live (prometheus-client's mmap files).

The master makes it fresh under its run directory before any worker starts and sets
PROMETHEUS_MULTIPROC_DIR in its own environment, so every child (workers, and QEMU, harmlessly)
inherits it before it imports prometheus_client. A reaped worker's live gauges are removed;
the directory goes when the master stops (DESIGN rule 5).
"""

from __future__ import annotations

import os
import shutil
import sys

ENV = "PROMETHEUS_MULTIPROC_DIR"


class AlreadyImported(RuntimeError):
    """prometheus_client was imported before the directory was set: it would keep values in memory."""


def prepare(directory: str) -> None:
    if "prometheus_client" in sys.modules and os.environ.get(ENV) != directory:
        raise AlreadyImported("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    shutil.rmtree(directory, ignore_errors=True)  # wiped at start: no counts from an earlier run
    os.makedirs(directory, mode=0o755)
    os.environ[ENV] = directory


def directory() -> str | None:
    return os.environ.get(ENV)


def mark_dead(pid: int) -> None:
    """Drop a dead process's live gauges; its counters and histograms stay in the totals."""
    path = directory()
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
