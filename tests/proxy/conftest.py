"""Fixtures for the http proxy tests: backends that are always stopped, and a one-call proxy starter."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.proxy.backends import Backend, RawBackend
from tests.running import RunningProxy, free_port


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(name: str = "backend") -> Backend:
        backend = Backend(name)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.close()


@pytest.fixture
def raw_backends() -> Iterator[Callable[..., RawBackend]]:
    started: list[RawBackend] = []

    def make(handle: Callable) -> RawBackend:
        backend = RawBackend(handle)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.close()


def http_config(
    port: int,
    servers: list[str],
    *,
    workers: int = 1,
    upstream: str = "app",
    upstream_extra: str = "",
    http: str = "",
    more: str = "",
    listen_upstream: bool = True,
) -> str:
    """A config with one http listener on `port` and one upstream over `servers`; `more` adds sections."""
    server_list = ", ".join(s if s.startswith("{") else f'"{s}"' for s in servers)  # inline tables as they are
    listen_line = f'upstream = "{upstream}"' if listen_upstream else ""
    return f"""
workers = {workers}
accept_mutex = false
[metrics]
enabled = false
[http]
{http}
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
{listen_line}
[[upstream]]
name = "{upstream}"
servers = [{server_list}]
{upstream_extra}
{more}
"""


@pytest.fixture
def http_proxy(ukproxy: Callable[..., RunningProxy]) -> Callable[..., tuple[RunningProxy, int]]:
    """Start a master with an http listener in front of `servers`; returns it and the port."""

    def start(servers: list[str], workers: int = 1, **options: object) -> tuple[RunningProxy, int]:
        port = free_port()
        proxy = ukproxy(http_config(port, servers, workers=workers, **options))  # type: ignore[arg-type]
        proxy.start(wait_ports=[port], expect_workers=workers)
        return proxy, port

    return start
