"""Fixtures for the http proxy tests: backends that are always stopped, a one-call proxy starter, and one
backend behind one proxy shared by a module's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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


def start_on_free_port(make: Callable[[int], RunningProxy], workers: int) -> tuple[RunningProxy, int]:
    """Start a proxy on a port that was free a moment ago; another process (an outgoing connection's
    ephemeral port, a parallel test) may take it first, so try a few."""
    for attempt in range(5):
        port = free_port()
        proxy = make(port)
        try:
            proxy.start(wait_ports=[port], expect_workers=workers)
            proxy.wait_ready(workers)  # else a test's first request waits out the workers' imports in its timeout
            return proxy, port
        except AssertionError as e:
            proxy.stop()
            if "Address already in use" not in str(e) or attempt == 4:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def http_proxy(ukproxy: Callable[..., RunningProxy]) -> Callable[..., tuple[RunningProxy, int]]:
    """Start a master with an http listener in front of `servers`; returns it and the port."""

    def start(servers: list[str], workers: int = 1, **options: object) -> tuple[RunningProxy, int]:
        return start_on_free_port(
            lambda port: ukproxy(http_config(port, servers, workers=workers, **options)), workers  # type: ignore[arg-type]
        )

    return start


@dataclass
class SharedProxy:
    backend: Backend  # named "backend": its answers say "backend GET /path"
    proxy: RunningProxy
    port: int


@contextlib.contextmanager
def backend_behind_a_proxy(tmp: Path, workers: int = 1, **options: object) -> Iterator[SharedProxy]:
    """A Backend behind a proxy of `http_config(..., **options)`, both stopped afterwards."""
    backend = Backend("backend")
    try:
        proxy, port = start_on_free_port(
            lambda port: RunningProxy(tmp, http_config(port, [backend.address], workers=workers, **options)),  # type: ignore[arg-type]
            workers,
        )
        try:
            yield SharedProxy(backend, proxy, port)
        finally:
            proxy.stop()
    finally:
        backend.close()


@pytest.fixture(scope="module")
def shared_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedProxy]:
    """One backend behind one proxy of the default config, for the tests of a module that only send
    requests and read the answers: a master's start-up costs about a second, and CI runs tests/proxy
    twice. A test that counts the backend's requests counts from where it began. A module that needs
    other settings overrides this fixture with `backend_behind_a_proxy(tmp, http=...)`."""
    with backend_behind_a_proxy(tmp_path_factory.mktemp("shared-proxy")) as shared:
        yield shared
