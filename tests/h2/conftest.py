"""One ukproxy with an `http2 = true` listener in front of one aiohttp backend, shared by the HTTP/2 tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.proxy.backends import Backend, RawBackend
from tests.running import RunningProxy, free_port

# Budgets small enough for a test to cross them in a few hundred frames, windows wide enough for no one else to.
LIMITS = """
client_max_body_size = "8m"
http2_max_concurrent_streams = 16
http2_max_header_list_size = "4k"
http2_max_resets = 50
http2_max_control_frames = 100
http2_flood_window = "60s"
"""


def h2_config(port: int, metrics_port: int, backend: Backend | RawBackend, access_log: Path) -> str:
    return f"""
workers = 1
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
access_log = "{access_log}"
[http]
{LIMITS}
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
http2 = true
[[upstream]]
name = "app"
servers = ["{backend.address}"]
"""


@dataclass
class H2Site:
    proxy: RunningProxy
    port: int
    metrics_port: int
    backend: Backend
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        return {w.pid for w in self.proxy.workers()}


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Site]:
    tmp = tmp_path_factory.mktemp("h2")
    backend = Backend("h2-backend")
    port, metrics_port = free_port(), free_port()
    access_log = tmp / "access.log"
    proxy = RunningProxy(tmp, h2_config(port, metrics_port, backend, access_log))
    try:
        proxy.start(wait_ports=[port, metrics_port], expect_workers=1)
        yield H2Site(proxy, port, metrics_port, backend, access_log)
    finally:
        proxy.stop()
        backend.close()
