"""The master's observability: the multiprocess directory, the /metrics + /status listener, reaped workers.

Made in `Master.__init__` (before any worker is spawned, so every child inherits
PROMETHEUS_MULTIPROC_DIR), started and stopped by `Master.run`. A listener that cannot bind is
logged and left off: the proxy keeps serving without it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ukproxy import metrics
from ukproxy.config import Config, MetricsConfig
from ukproxy.metrics import multiproc
from ukproxy.metrics.multiproc import ServerExists
from ukproxy.status import StatusProvider, WorkerLike, build_status

if TYPE_CHECKING:
    from ukproxy.metrics.server import MetricsServer

log = logging.getLogger("ukproxy.metrics")


class MasterObservability:
    """What the master shows of itself: its workers (as `workers()` lists them), its config generation,
    and the per-server series of the servers that `server_exists` still knows."""

    def __init__(self, run_dir: str, workers: Callable[[], Collection[WorkerLike]], generation: Callable[[], int],
                 server_exists: ServerExists):
        self.workers = workers
        self.generation = generation
        self.server_exists = server_exists
        self.directory = os.path.join(run_dir, "metrics")
        multiproc.prepare(self.directory)
        metrics.enable()
        self.started_at = time.monotonic()
        self.status_providers: dict[str, StatusProvider] = {}
        self.server: MetricsServer | None = None
        self.serving: MetricsConfig | None = None

    def add_status_provider(self, name: str, provider: StatusProvider) -> None:
        """`provider()` is called for each GET /status; what it returns is the JSON's `name` key (e.g. "vms")."""
        self.status_providers[name] = provider

    async def start(self, config: Config) -> None:
        await self._serve(config.metrics)

    async def reconfigure(self, config: Config) -> None:
        """After a reload: move the listener if [metrics] changed."""
        if config.metrics != self.serving:
            await self._stop_server()
            await self._serve(config.metrics)

    async def stop(self) -> None:
        await self._stop_server()
        multiproc.remove(self.directory)

    def worker_exited(self, pid: int) -> None:
        multiproc.mark_dead(pid, self.server_exists)

    def worker_restarted(self, slot: int) -> None:
        metrics.worker_restarted(slot)

    # the listener

    async def _serve(self, config: MetricsConfig) -> None:
        self.serving = config
        if not config.enabled:
            return
        from ukproxy.metrics.master_collector import MasterCollector, ukproxy_version
        from ukproxy.metrics.server import MetricsServer

        collector = MasterCollector(lambda: len(self.workers()), self.generation)
        version = ukproxy_version()
        server = MetricsServer(self.directory, collector, lambda families: build_status(
            families, self.workers(), self.generation(), self.started_at, self.status_providers, version),
            self.server_exists)
        try:
            await server.start(config.host, config.port)
        except OSError as e:
            log.error("metrics: cannot listen on %s:%d (%s); /metrics and /status are off",
                      config.host, config.port, e.strerror or e)
            return
        self.server = server
        log.info("metrics: /metrics and /status on http://%s:%d", config.host, config.port)

    async def _stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
