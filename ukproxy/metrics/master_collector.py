"""Figures only the master knows, exported at scrape time: build info and its live workers."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


def ukproxy_version() -> str:
    try:
        return importlib.metadata.version("ukproxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class MasterCollector(Collector):
    def __init__(self, live_workers: Callable[[], int], generation: Callable[[], int]):
        self.live_workers = live_workers
        self.generation = generation
        self.build = (ukproxy_version(), platform.python_version(), _version_of("uvloop"))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("ukproxy_build_info", "ukproxy's version and what it runs on; always 1.",
                                 labels=["version", "python", "uvloop"])
        info.add_metric(list(self.build), 1)
        yield info
        yield GaugeMetricFamily("ukproxy_workers", "Worker processes alive now (draining ones included).",
                                value=self.live_workers())
        yield GaugeMetricFamily("ukproxy_config_generation", "Reloads applied since the master started.",
                                value=self.generation())
