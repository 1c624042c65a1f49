"""A worker's observability: its metrics flusher, its access log, and reopening both logs on SIGUSR1."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ukproxy.access_log import AccessLog
from ukproxy.logs import setup_logging
from ukproxy.metrics import multiproc

if TYPE_CHECKING:
    from ukproxy.accept_cycle import AcceptCycle
    from ukproxy.config import Config
    from ukproxy.metrics.flush import WorkerMetricsFlusher
    from ukproxy.upstream.group import UpstreamGroup
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.worker")


class WorkerObservability:
    def __init__(self, config: Config, worker_id: int, state: WorkerState, cycle: AcceptCycle,
                 groups: dict[str, UpstreamGroup] | None = None):
        self.config = config
        self.role = f"worker {worker_id}"
        self.state = state
        state.access_log = AccessLog.from_config(config.log, state.loop)
        self.flusher: WorkerMetricsFlusher | None = None
        if multiproc.directory():  # set by the master; a worker started some other way records nothing
            from ukproxy import metrics
            from ukproxy.metrics.flush import WorkerMetricsFlusher

            metrics.enable()
            self.flusher = WorkerMetricsFlusher(state, cycle, worker_id, groups)

    def start(self) -> None:
        if self.flusher is not None:
            self.flusher.start()

    def stop(self) -> None:
        """Last flush of the counters and of the access log's buffer, before the worker exits."""
        if self.flusher is not None:
            self.flusher.stop()
        if self.state.access_log is not None:
            self.state.access_log.close()

    def reopen_logs(self) -> None:
        """SIGUSR1 (logrotate). The master has made the files ours; the directories must be reachable
        by the worker's user, or the old files are kept."""
        try:
            setup_logging(self.config.log, self.role)
        except OSError as e:
            log.error("%s: cannot reopen the error log %s (%s); still writing to the old file",
                      self.role, self.config.log.error_log, e.strerror)
        if self.state.access_log is not None:
            self.state.access_log.reopen()
        log.info("%s: logs reopened", self.role)
