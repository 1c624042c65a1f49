"""HTTP/2 with real clients: curl with prior knowledge, h2load, and an h2 client that holds its window shut."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import h2.settings

from tests.h2.client import H2Client
from tests.h2.conftest import H2Site
from tests.observability.helpers import scrape
from tests.proxy.backends import pattern
from tests.waiting import wait_until


def curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], input=stdin, capture_output=True, timeout=30,
                          check=True)


def test_curl_get_and_post_over_h2c(site: H2Site) -> None:
    got = curl("--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", f"{site.url}/hello?x=1")
    assert got.stdout.decode().splitlines() == ["h2-backend GET /hello?x=1", "2 200"]
    # A body far past the stream's 64 KiB window: it arrives whole only if window is given back as it goes upstream.
    body = pattern(3_000_000, seed=1)
    got = curl("--http2-prior-knowledge", "--data-binary", "@-", f"{site.url}/sha", stdin=body)
    assert got.stdout.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    # A response far past the client's windows (curl's stream window is 1 MiB): DATA frames as the windows allow.
    got = curl("--http2-prior-knowledge", f"{site.url}/bytes/3000000")
    assert got.stdout == pattern(3_000_000)


def test_http1_still_served_on_an_http2_listener(site: H2Site) -> None:
    got = curl("--http1.1", "-w", "\n%{http_version}", f"{site.url}/one")
    assert got.stdout.decode().splitlines() == ["h2-backend GET /one", "1.1"]


def test_h2load_streams_share_the_upstream_keepalive_pool(site: H2Site) -> None:
    before_requests = site.backend.requests[("GET", "/load")]
    before_connections = site.backend.connections
    run = subprocess.run(["h2load", "-n", "600", "-c", "3", "-m", "10", f"{site.url}/load"],
                         capture_output=True, text=True, timeout=60)
    assert "600 succeeded, 0 failed" in run.stdout, run.stdout + run.stderr
    assert "status codes: 600 2xx" in run.stdout
    assert site.backend.requests[("GET", "/load")] - before_requests == 600
    # 30 streams at most in flight at once, each on an upstream connection it took from (and gave back to)
    # the pool: never a connection per request.
    assert site.backend.connections - before_connections <= 30


def test_response_waits_for_the_clients_window(site: H2Site) -> None:
    """With a 1 KiB window and no WINDOW_UPDATE, h2 would raise on any byte past it: the proxy holds the rest
    (and its upstream) until the window opens, then sends all of it."""
    client = H2Client(site.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024}, auto_window=False)
    try:
        stream_id = client.request("/bytes/300000")
        result = client.streams[stream_id]
        client.until(lambda: len(result.body) == 1024, "the first 1 KiB")
        while not result.ended:
            client.open_window(stream_id, 65536)
            client.read_once()
        assert bytes(result.body) == pattern(300_000)
        assert result.headers[b":status"] == b"200"
    finally:
        client.close()


def test_limits_are_announced_and_an_oversized_header_list_is_refused(site: H2Site) -> None:
    client = H2Client(site.port)
    try:
        assert client.get("/small").headers[b":status"] == b"200"
        settings = client.remote_settings
        assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 16
        assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 4096
        client.request("/big", headers=[(b"x-big", b"a" * 6000)])
        client.read_until_closed()
        assert client.goaway is not None and client.goaway.error_code != 0
    finally:
        client.close()
    assert site.backend.requests[("GET", "/big")] == 0


def test_malformed_header_lists_get_400_and_never_reach_the_upstream(site: H2Site) -> None:
    """RFC 9113 8.2: what HTTP/1.1 upstreams could be fooled by (a CR LF in a value) and what HTTP/2 forbids."""
    client = H2Client(site.port, check_headers=False)
    try:
        for bad in ([(b"x-crlf", b"a\r\nx-injected: 1")], [(b"X-Upper", b"v")], [(b"connection", b"close")],
                    [(b"te", b"gzip")], [(b"x-nul", b"a\0b")], [(b"bad name", b"v")]):
            answer = client.get("/malformed", headers=bad)
            assert answer.headers[b":status"] == b"400", bad
        cookies = client.get("/headers", headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
        assert ["Cookie", "a=1; b=2"] in json.loads(bytes(cookies.body))["headers"]
    finally:
        client.close()
    assert site.backend.requests[("GET", "/malformed")] == 0


def test_protocol_in_access_log_and_http2_metrics(site: H2Site) -> None:
    client = H2Client(site.port)
    try:
        for i in range(3):
            assert client.get(f"/counted/{i}").ended
    finally:
        client.close()
    line = wait_until(lambda: [x for x in site.access_log.read_text().splitlines() if "/counted/2" in x]
                      if site.access_log.exists() else [], "the access log line of /counted/2")[0]
    assert re.search(r'"GET /counted/2 HTTP/2\.0" 200 ', line), line
    page = wait_until(lambda: scrape(site.metrics_port), "HTTP/2 streams in /metrics",
                      accept=lambda p: p.value("ukproxy_http2_streams_total") >= 3)
    assert page.value("ukproxy_requests_total", upstream="app", status_class="2xx") >= 3
    by_protocol = wait_until(lambda: scrape(site.metrics_port).by_label("ukproxy_requests_by_protocol_total",
                                                                         "protocol"),
                             "requests by protocol", accept=lambda p: p.get("h2", 0) >= 3)
    assert by_protocol.get("http/1.1", 0) >= 1  # test_http1_still_served_on_an_http2_listener's
