"""A scenario is one way of reaching a backend (direct, or through a proxy); running it is one client run.

A scenario may have several URLs (direct to a pool of VMs): the connections are split over them, one
client process per URL in parallel, and the figures combined (req/s summed, p50 averaged weighted by
requests, p99 the worst). `prefix` runs the client inside a network namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench import clients
from bench.clients import RunResult


@dataclass
class Scenario:
    name: str  # "ukproxy tcp"
    backend: str  # "native" | "vm"
    proxy: str  # "direct" | "ukproxy" | "nginx" | "haproxy"
    layer: str  # "l4" | "l7" | "none"
    urls: list[str]
    prefix: list[str] = field(default_factory=list)
    client_placement: str = "host namespace, 127.0.0.1"
    worker_pids: Callable[[], list[int]] | None = None
    cpu_root: int | None = None  # the proxy's root process: its tree's CPU per request is measured (bench/cpu.py)


def _shares(s: Scenario, connections: int) -> list[tuple[str, int]]:
    n = len(s.urls)
    shares = [connections // n + (1 if i < connections % n else 0) for i in range(n)]
    return [(url, c) for url, c in zip(s.urls, shares, strict=True) if c > 0]


def run_wrk(s: Scenario, connections: int, seconds: float) -> RunResult:
    runs = _shares(s, connections)
    threads = 2 if len(runs) == 1 else 1
    outs = clients.run_parallel([[*s.prefix, *clients.wrk_argv(u, c, seconds, threads)] for u, c in runs],
                                seconds + 30)
    results = [clients.parse_wrk(out, c) for out, (_u, c) in zip(outs, runs, strict=True)]
    return results[0] if len(results) == 1 else combine(results, connections)


def combine(results: list[RunResult], connections: int) -> RunResult:
    total = sum(r.requests for r in results) or 1
    detail: dict[str, int] = {}
    for r in results:
        for k, v in r.error_detail.items():
            detail[k] = detail.get(k, 0) + v
    return RunResult(
        client=results[0].client, connections=connections, rps=sum(r.rps for r in results),
        p50_ms=sum(r.p50_ms * r.requests for r in results) / total, p99_ms=max(r.p99_ms for r in results),
        requests=sum(r.requests for r in results), errors=sum(r.errors for r in results),
        seconds=max(r.seconds for r in results), percentiles_ms={}, error_detail=detail,
    )


def run_ab(s: Scenario, connections: int, requests: int, seconds: float, keepalive: bool) -> RunResult:
    runs = _shares(s, connections)
    outs = clients.run_parallel(
        [[*s.prefix, *clients.ab_argv(u, c, max(1, requests // len(runs)), keepalive, seconds)] for u, c in runs],
        seconds + 30)
    per = max(1, requests // len(runs))
    results = [clients.parse_ab(out, c, keepalive, per) for out, (_u, c) in zip(outs, runs, strict=True)]
    return results[0] if len(results) == 1 else combine(results, connections)
