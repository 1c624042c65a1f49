"""The error log: levels, a file or stderr, one line per event naming the process it came from."""

from __future__ import annotations

import logging
import os
import sys

from ukproxy.config import LogConfig

FORMAT = "%(asctime)s [%(levelname)s] %(process)d %(role)s: %(message)s"


class _RoleFilter(logging.Filter):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        return True


def setup_logging(config: LogConfig, role: str) -> None:
    """Point the root logger at the configured error log; called once per process, on reload and on SIGUSR1.

    The new file is opened before the old handler goes, so a path that cannot be opened (raises
    OSError) leaves the process logging where it did.
    """
    if config.error_log == "stderr":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(config.error_log)), exist_ok=True)
        handler = logging.FileHandler(config.error_log)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RoleFilter(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(config.level.upper())
