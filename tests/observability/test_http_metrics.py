"""HTTP through real workers: requests by status class, consistent histograms, one access log line per request."""

from __future__ import annotations

import contextlib
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.observability.helpers import HttpBackend, histograms_consistent, scrape, status, wait_until
from tests.running import RunningProxy, free_port

HTTP_LINE = re.compile(
    r'^(?P<client>\S+) - - \[[^\]]+\] "(?P<method>\S+) (?P<uri>\S+) (?P<protocol>HTTP/[\d.]+|-)" '
    r'(?P<status>\d{3}) (?P<sent>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" upstream="(?P<upstream>[^"]*)" '
    r"upstream_time=(?P<upstream_time>[\d.]+|-) request_time=(?P<request_time>[\d.]+)$"
)


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    server = HttpBackend()
    yield server
    server.close()


def http_config(port: int, mport: int, backend_port: int, access: Path) -> str:
    return f"""
workers = 2
reuseport = true
[log]
access_log = "{access}"
[metrics]
listen = "127.0.0.1:{mport}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
[[upstream]]
name = "app"
servers = ["127.0.0.1:{backend_port}"]
"""


def fetch(port: int, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"User-Agent": "obs-test/1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            return e.code


def test_requests_histograms_and_access_log_match_the_clients(ukproxy: Callable[..., RunningProxy],
                                                              backend: HttpBackend, tmp_path: Path) -> None:
    port, mport = free_port(), free_port()
    access = tmp_path / "access.log"
    ukproxy(http_config(port, mport, backend.port, access)).start([port, mport], expect_workers=2)
    paths = [f"/ok/{i}" for i in range(30)] + [f"/status/404?{i}" for i in range(6)] + ["/status/503"] * 4
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda p: fetch(port, p), paths))
    assert Counter(codes) == {200: 30, 404: 6, 503: 4}
    n = len(paths)

    page = wait_until(lambda: scrape(mport), "every request", accept=lambda p: p.value("ukproxy_requests_total") >= n)
    assert page.value("ukproxy_requests_total") == n
    assert page.value("ukproxy_requests_total", upstream="app", status_class="2xx") == 30
    assert page.value("ukproxy_requests_total", upstream="app", status_class="4xx") == 6
    assert page.value("ukproxy_requests_total", upstream="app", status_class="5xx") == 4
    assert page.value("ukproxy_request_duration_seconds_count", upstream="app") == n
    assert page.value("ukproxy_upstream_response_time_seconds_count", upstream="app") == n
    checked = histograms_consistent(page)
    assert any(c.startswith("ukproxy_request_duration_seconds") for c in checked)
    assert any(c.startswith("ukproxy_upstream_response_time_seconds") for c in checked)
    assert status(mport)["requests"] == n

    written = wait_until(lambda: access.read_text().splitlines() if access.exists() else [], "a line per request",
                         accept=lambda lines: len(lines) >= n)
    assert len(written) == n
    records = [HTTP_LINE.match(line) for line in written]
    assert all(records), [line for line, m in zip(written, records, strict=True) if not m]
    assert sorted(m["uri"] for m in records) == sorted(paths)  # type: ignore[index]
    assert Counter(int(m["status"]) for m in records) == Counter(codes)  # type: ignore[index]
    assert {m["agent"] for m in records} == {"obs-test/1"}  # type: ignore[index]
    assert {m["upstream"] for m in records} == {f"127.0.0.1:{backend.port}"}  # type: ignore[index]
