"""limit_req through a real two-worker ukproxy with real clients (wrk, curl): one rate for both workers,
burst and nodelay, smoothing, per-header keys, per-route rules and the configurable status (edge/limits.py)."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from tests.edge.guard_proxy import RATE, Guarded, curl
from tests.proxy.backends import Backend
from tests.waiting import wait_until


@pytest.fixture
def backend(guard_backend: Backend) -> Backend:
    return guard_backend


def test_one_rate_holds_across_both_workers(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    accepted_before = _accepted(guarded)
    out = subprocess.run(["wrk", "-t2", "-c16", "-d2s", guarded.url("rate", "/rate")], capture_output=True,
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
    accepted = _accepted(guarded)
    assert all(accepted[w] > accepted_before.get(w, 0) for w in ("0", "1")), (accepted_before, accepted)
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="limit_req", zone="site"),
               "the refusals in the metrics", accept=lambda n: n >= refused)
    assert curl(guarded.url("rate"))[0] in (200, 429)


def _accepted(guarded: Guarded) -> dict[str, float]:
    """Connections each worker accepted so far."""
    found = re.findall(r'ukproxy_worker_accepted_connections\{.*?worker="(\d+)".*?\} (\S+)', guarded.metrics())
    return {worker: float(n) for worker, n in found}


def test_refused_past_the_burst_with_the_configured_status_per_key(guarded: Guarded) -> None:
    statuses = [curl(guarded.url("bykey"), "-H", "X-Api-Key: alpha")[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 503, 503]  # the first, then a burst of 2, then refused
    assert curl(guarded.url("bykey"), "-H", "X-Api-Key: beta")[0] == 200  # another key has its own bucket
    assert [curl(guarded.url("bykey"))[0] for _ in range(5)] == [200] * 5  # no key: not limited, as in nginx


def test_a_burst_is_smoothed_to_the_rate_not_refused(guarded: Guarded) -> None:
    before = guarded.metric("ukproxy_limit_req_delayed_total", zone="smooth")
    urls = [guarded.url("smooth", f"/s{i}") for i in range(6)]
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
    out = subprocess.run(["ab", "-n", "60", "-c", "6", guarded.url("smooth", "/free/x")], capture_output=True,
                         text=True, timeout=60).stdout
    assert "Complete requests:      60" in out and "Non-2xx" not in out, out


def test_limits_and_access_key_on_the_real_client_address(guarded: Guarded) -> None:
    # [real_ip] trusts 127.0.0.1: its X-Forwarded-For names the client the limit and the deny list see.
    def status(client: str) -> int:
        return curl(guarded.url("forwarded"), "-H", f"X-Forwarded-For: {client}")[0]

    assert [status("192.0.2.1"), status("192.0.2.1")] == [200, 429]  # 1r/m, no burst: the second is over
    assert status("192.0.2.2") == 200  # another client, another bucket
    assert status("192.0.2.66") == 403


def test_a_reload_keeps_a_zones_state(guarded: Guarded) -> None:
    def status(key: str) -> int:
        return curl(guarded.url("bykey"), "-H", f"X-Api-Key: {key}")[0]

    assert [status("gamma") for _ in range(4)] == [200, 200, 200, 503]
    old = {w.pid for w in guarded.proxy.workers()}
    guarded.proxy.signal(signal.SIGHUP)
    guarded.proxy.wait_workers(2, exclude=old)
    wait_until(lambda: old & {w.pid for w in guarded.proxy.workers()}, "the old workers to leave",
               accept=lambda left: not left, context=guarded.proxy.log)
    # The new workers map the same zone (same name and size, as nginx keeps it): gamma is still over.
    assert status("gamma") == 503
    assert status("delta") == 200
