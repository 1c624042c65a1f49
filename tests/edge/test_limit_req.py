"""limit_req through a real two-worker ukproxy with real clients (wrk, curl): one rate for both workers,
burst and nodelay, smoothing, per-header keys, per-route rules and the configurable status (edge/limits.py)."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time

import pytest

from tests.edge.guard_proxy import RATE, Guarded, curl
from tests.proxy.backends import Backend
from tests.waiting import wait_until


@pytest.fixture
def backend(guard_backend: Backend) -> Backend:
    return guard_backend


def test_one_rate_holds_across_both_workers(guarded: Guarded, backend: Backend) -> None:
    accepted_before = _accepted(guarded)
    last_end = -math.inf
    for _ in range(3):  # a run counts only when wrk pushed well past the rate (a busy machine may starve it)
        before = backend.total()
        start = time.monotonic()
        requests, seconds, refused, out = _wrk_at_the_rate(guarded)
        passed = requests - refused
        # nginx's leaky bucket: the first request and what of the burst (a second's worth) drained since the
        # last run left it full, then one per 1/rate. (The burst keeps workers descheduled on a busy machine
        # from losing the rate for good: the bucket drains while no request is checked.)
        expected = RATE * seconds + RATE * min(1.0, start - last_end) + 1
        last_end = time.monotonic()
        if requests > 3 * expected:
            break
    assert requests > 3 * expected, out  # the limit, not the client, was what held the rate
    # A zone per worker would let about twice the rate through; a worker descheduled for a moment lets a
    # little less through (never more), hence the lopsided bounds.
    assert 0.8 * expected <= passed <= 1.1 * expected, (passed, expected, out)
    # The refused ones never went upstream (wrk leaves out the requests still in flight when it stops).
    assert passed <= backend.total() - before <= passed + 16
    # Both workers took connections: a limit per worker would have let twice the rate through.
    accepted = _accepted(guarded)
    assert all(accepted[w] > accepted_before.get(w, 0) for w in ("0", "1")), (accepted_before, accepted)
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="limit_req", zone="site"),
               "the refusals in the metrics", accept=lambda n: n >= refused)
    assert curl(guarded.url("rate"))[0] in (200, 429)


def _wrk_at_the_rate(guarded: Guarded) -> tuple[int, float, int, str]:
    """wrk flat out at the rate-limited route for 2 s: requests, seconds, refused, and wrk's output."""
    out = subprocess.run(["wrk", "-t2", "-c16", "-d2s", guarded.url("rate", "/rate")], capture_output=True,
                         text=True, timeout=60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    assert m, out
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(m.group(1)), float(m.group(2)), int(non_2xx.group(1)) if non_2xx else 0, out


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
