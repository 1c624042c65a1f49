"""The bench's parsers and report: request errors are counted and shown, never dropped."""

from __future__ import annotations

import math

import pytest

from bench.clients import ClientFailed, parse_ab, parse_wrk
from bench.report import render
from bench.settings import QUICK

WRK_OK = """Running 2s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.34us    1.02ms  20.11ms   92.00%
    Req/Sec    40.12k     2.01k   44.00k    70.00%
  Latency Distribution
     50%  610.00us
     75%    0.90ms
     90%    1.50ms
     99%    1.20s
  160000 requests in 2.00s, 25.00MB read
Requests/sec:  80000.50
Transfer/sec:     12.50MB
"""

WRK_ERRORS = WRK_OK.replace(
    "Requests/sec:",
    "  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 7\nRequests/sec:",
)

AB_OUT = """Concurrency Level:      32
Time taken for tests:   1.500 seconds
Complete requests:      5000
Failed requests:        4
   (Connect: 0, Receive: 0, Length: 4, Exceptions: 0)
Non-2xx responses:      2
Requests per second:    3333.33 [#/sec] (mean)
Percentage of the requests served within a certain time (ms)
  50%      3
  66%      4
  90%      6
  99%     12
 100%     40 (longest request)
"""


def test_wrk_figures_and_units() -> None:
    r = parse_wrk(WRK_OK, 64)
    assert r.rps == 80000.5 and r.requests == 160000 and r.errors == 0
    assert math.isclose(r.p50_ms, 0.61) and math.isclose(r.p99_ms, 1200.0)
    assert r.percentiles_ms["75"] == 0.9 and r.seconds == 2.0


def test_wrk_errors_are_counted() -> None:
    r = parse_wrk(WRK_ERRORS, 64)
    assert r.errors == 12
    assert r.error_detail == {"read": 3, "timeout": 2, "non2xx": 7}


def test_ab_figures_and_failures() -> None:
    r = parse_ab(AB_OUT, 32, keepalive=False)
    assert r.client == "ab" and r.rps == 3333.33 and r.requests == 5000
    assert r.p50_ms == 3 and r.p99_ms == 12
    assert r.error_detail == {"failed": 4, "non2xx": 2} and r.errors == 6


@pytest.mark.parametrize("text", ["", "wrk: connection refused\n", "Requests/sec: 12\n"])
def test_unparseable_output_fails_loudly(text: str) -> None:
    with pytest.raises(ClientFailed):
        parse_wrk(text, 1)
    with pytest.raises(ClientFailed):
        parse_ab(text, 1, keepalive=True)


def _record(scenario: str, layer: str, rps: float, errors: int) -> dict:
    return {"suite": "native", "scenario": scenario, "backend": "native", "proxy": scenario.split()[0],
            "layer": layer, "client_placement": "host", "rep": 0, "client": "wrk", "connections": 64,
            "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "requests": 100, "errors": errors, "seconds": 2.0,
            "percentiles_ms": {}, "error_detail": {"non2xx": errors} if errors else {}}


def test_report_flags_figures_from_runs_with_errors() -> None:
    from dataclasses import asdict

    run = {"started": "now", "quick": True, "settings": asdict(QUICK), "notes": [],
           "machine": {k: "x" for k in ("cpu_model", "usable_cpus", "python", "uvloop", "nginx", "qemu", "wrk",
                                        "ab", "haproxy")},
           "records": [_record("direct", "none", 100.0, 0), _record("ukproxy tcp", "l4", 90.0, 5),
                       _record("nginx stream", "l4", 80.0, 0)]}
    md = render(run)
    assert "5 request errors in this run" in md
    assert "| ukproxy tcp | 90 |" in md and "**5 ⚠**" in md
    assert "1.12x" in md  # 90 / 80 against nginx stream
    assert "yes ⚠ errors" in md  # the target row says its inputs had errors
