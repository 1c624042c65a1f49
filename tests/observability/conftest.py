"""A log directory the workers' unprivileged user can reach (pytest's own tmp dirs are root-only)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ukproxy-obs-"))
    os.chmod(path, 0o755)  # workers drop to `nobody` when the tests run as root: they reopen logs by path
    yield path
    shutil.rmtree(path, ignore_errors=True)
