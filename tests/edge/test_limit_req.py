"""limit_req through a real two-worker ukproxy with real clients (wrk, curl): one rate for both workers,
burst and nodelay, smoothing, per-header keys, per-route rules and the configurable status (edge/limits.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.edge.guard_proxy import Guarded, curl, start_guarded
from tests.proxy.backends import Backend
from tests.waiting import wait_until

RATE = 100  # r/s of the site-wide zone

CONFIG = f"""
[[limit_req_zone]]
name = "site"
key = "site"
rate = "{RATE}r/s"
size = "64k"

[[limit_req_zone]]
name = "bykey"
key = "header:X-Api-Key"
rate = "1r/m"

[[limit_req_zone]]
name = "smooth"
key = "remote_addr"
rate = "4r/s"

[[listen]]  # 0: one rate for everything, refused past its burst at once
address = "127.0.0.1:{{port0}}"
protocol = "http"
upstream = "app"
limit_req = {{zone = "site", burst = {RATE}, nodelay = true}}

[[listen]]  # 1: per X-Api-Key, a burst of 2, answered 503
address = "127.0.0.1:{{port1}}"
protocol = "http"
upstream = "app"
limit_req = [{{zone = "bykey", burst = 2, nodelay = true, status = 503}}]

[[listen]]  # 2: a burst of 5 smoothed to the rate; /free not limited
address = "127.0.0.1:{{port2}}"
protocol = "http"
limit_req = {{zone = "smooth", burst = 5}}

[[route]]
prefix = "/"
upstream = "app"

[[route]]
prefix = "/free"
upstream = "app"
limit_req = []

[[upstream]]
name = "app"
servers = ["{{backend}}"]
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Guarded]:
    g = start_guarded(tmp_path_factory.mktemp("limit_req"), CONFIG, backend.address, 3)
    yield g
    g.stop()


def test_one_rate_holds_across_both_workers(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    out = subprocess.run(["wrk", "-t2", "-c16", "-d2s", guarded.url(0, "/rate")], capture_output=True,
                         text=True, timeout=60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    assert m, out
    requests, seconds = int(m.group(1)), float(m.group(2))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(non_2xx.group(1)) if non_2xx else 0
    passed = requests - refused
    # nginx's leaky bucket: the first request and the burst, then one per 1/rate. (The bucket drains while
    # no request is checked: a burst of a second's worth keeps workers descheduled on a busy machine from
    # losing the rate for good.)
    expected = RATE * seconds + RATE + 1
    assert abs(passed - expected) <= 0.1 * expected, (passed, expected, out)
    # The refused ones never went upstream (wrk leaves out the requests still in flight when it stops).
    assert passed <= backend.total() - before <= passed + 16
    assert requests > 3 * expected  # wrk pushed well past the rate, so the limit was what held it
    # Both workers took connections: a limit per worker would have let twice the rate through.
    accepted = re.findall(r'ukproxy_worker_accepted_connections\{.*?worker="(\d+)".*?\} (\S+)', guarded.metrics())
    assert len({w for w, n in accepted if float(n) > 0}) == 2, accepted
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="limit_req", zone="site"),
               "the refusals in the metrics", accept=lambda n: n >= refused)
    assert curl(guarded.url(0))[0] in (200, 429)


def test_refused_past_the_burst_with_the_configured_status_per_key(guarded: Guarded) -> None:
    statuses = [curl(guarded.url(1), "-H", "X-Api-Key: alpha")[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 503, 503]  # the first, then a burst of 2, then refused
    assert curl(guarded.url(1), "-H", "X-Api-Key: beta")[0] == 200  # another key has its own bucket
    assert [curl(guarded.url(1))[0] for _ in range(5)] == [200] * 5  # no key: not limited, as in nginx


def test_a_burst_is_smoothed_to_the_rate_not_refused(guarded: Guarded) -> None:
    before = guarded.metric("ukproxy_limit_req_delayed_total", zone="smooth")
    urls = [guarded.url(2, f"/s{i}") for i in range(6)]
    each = [arg for url in urls for arg in (url, "-o", "/dev/null")]
    out = subprocess.run(["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "6",
                          "-w", "%{http_code} %{time_total}\\n", *each], capture_output=True, text=True,
                         timeout=30).stdout
    answers = [line.split() for line in out.splitlines()]
    assert sorted(status for status, _ in answers) == ["200"] * 6  # the burst is 5: nobody refused
    # The first went at once; the five in the burst each waited for their turn at 4 r/s, the last 5/4 s.
    assert max(float(seconds) for _, seconds in answers) >= 1.0, answers
    wait_until(lambda: guarded.metric("ukproxy_limit_req_delayed_total", zone="smooth") - before,
               "five delayed requests in the metrics", accept=lambda n: n == 5)


def test_a_route_can_turn_the_listeners_limit_off(guarded: Guarded) -> None:
    out = subprocess.run(["ab", "-n", "60", "-c", "6", guarded.url(2, "/free/x")], capture_output=True,
                         text=True, timeout=60).stdout
    assert "Complete requests:      60" in out and "Non-2xx" not in out, out
