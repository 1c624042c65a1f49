"""Reading every process's metric files, skipping the ones still being created.

prometheus-client creates a file empty and sizes it a moment later; a scrape in between would
fail on it (struct.error), and a process killed in between would leave it empty for good.

Series of servers that no longer exist are left out: a mmap file cannot forget a key, and every
VM that ever ran would otherwise keep its `server="<vm id>"` series for the life of its worker.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ukproxy.metrics.multiproc import ServerExists, is_gone_server

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
    """MultiProcessCollector over the complete files only, without the series of gone servers."""

    def __init__(self, registry: object, directory: str,
                 server_exists: ServerExists = lambda upstream, server: True):
        super().__init__(registry, path=directory)
        self.directory = directory
        self.server_exists = server_exists

    def collect(self) -> Iterable[Metric]:
        metrics = self.merge(complete_files(self.directory), accumulate=True)
        for metric in metrics:
            if any("server" in sample.labels for sample in metric.samples):
                metric.samples = [s for s in metric.samples if not is_gone_server(s.labels, self.server_exists)]
        return metrics
