"""Reading every process's metric files, skipping the ones still being created.

prometheus-client creates a file empty and sizes it a moment later; a scrape in between would
fail on it (struct.error), and a process killed in between would leave it empty for good.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

HEADER = 8  # bytes: how much of the file is used, and padding


def complete_files(directory: str) -> list[str]:
    files = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        try:
            if os.path.getsize(path) >= HEADER:
                files.append(path)
        except FileNotFoundError:  # a dead process's live gauges, removed since the glob
            continue
    return files


class MetricFiles(MultiProcessCollector):
    """MultiProcessCollector over the complete files only."""

    def __init__(self, registry: object, directory: str):
        super().__init__(registry, path=directory)
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        return self.merge(complete_files(self.directory), accumulate=True)
