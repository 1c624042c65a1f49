"""Shared fixtures: a factory for real ukproxy masters that are always stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.running import RunningProxy


@pytest.fixture
def ukproxy(tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    started: list[RunningProxy] = []

    def make(config_text: str, name: str = "ukproxy", pid_name: str | None = None) -> RunningProxy:
        proxy = RunningProxy(tmp_path, config_text, name, pid_name)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
