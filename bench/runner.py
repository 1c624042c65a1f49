"""Runs scenarios interleaved and repeated: for each repetition, every connection count, every scenario.

Every run, raw, becomes one record (a dict) of the run's JSON. A client failure aborts the bench (it is
re-raised with the scenario named); request errors are recorded and reported, never dropped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import cpu
from bench.clients import ClientFailed, RunResult
from bench.scenarios import Scenario, run_ab, run_wrk
from bench.settings import Settings


class ScenarioFailed(RuntimeError):
    pass


def _record(suite: str, s: Scenario, rep: int, r: RunResult, **extra: Any) -> dict[str, Any]:
    rec = {"suite": suite, "scenario": s.name, "backend": s.backend, "proxy": s.proxy, "layer": s.layer,
           "client_placement": s.client_placement, "rep": rep, **r.to_dict(), **extra}
    if r.errors:
        print(f"  WARNING: {suite}/{s.name} {r.client} c={r.connections}: {r.errors} errors {r.error_detail}",
              file=sys.stderr)
    return rec


def _guard(s: Scenario, what: str, fn: Callable[[], RunResult]) -> RunResult:
    try:
        return fn()
    except ClientFailed as e:
        raise ScenarioFailed(f"scenario {s.backend}/{s.name} ({what}) failed: {e}") from None


def _measured(s: Scenario, what: str, fn: Callable[[], RunResult]) -> tuple[RunResult, dict[str, float]]:
    """One client run, and the proxy's CPU per request over it (empty for a scenario without a proxy)."""
    if s.cpu_root is None:
        return _guard(s, what, fn), {}
    before = cpu.tree_times(s.cpu_root)
    r = _guard(s, what, fn)
    return r, cpu.per_request_us(before, cpu.tree_times(s.cpu_root), r.requests)


def _cpu_text(c: dict[str, float]) -> str:
    return f"  cpu {c['cpu_us']:5.1f} us/req ({c['cpu_user_us']:.1f} usr {c['cpu_system_us']:.1f} sys)" if c else ""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def throughput(suite: str, scenarios: list[Scenario], st: Settings, connections: tuple[int, ...],
               with_ab: bool = True) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for rep in range(st.reps):
        for c in connections:
            for i in range(len(scenarios)):  # rotate the order each repetition: nobody always goes first
                s = scenarios[(i + rep) % len(scenarios)]
                r, used = _measured(s, f"wrk c={c}", lambda s=s, c=c: run_wrk(s, c, st.wrk_seconds))
                _log(f"  {suite:6} {s.name:14} wrk   c={c:<4} {r.rps:10.0f} req/s p99 {r.p99_ms:8.2f} ms"
                     f"{_cpu_text(used)}{'  ERRORS ' + str(r.errors) if r.errors else ''}")
                records.append(_record(suite, s, rep, r, **used))
        if not with_ab:
            continue
        for keepalive in (True, False):
            for i in range(len(scenarios)):
                s = scenarios[(i + rep) % len(scenarios)]
                r, used = _measured(s, "ab", lambda s=s, k=keepalive: run_ab(s, st.ab_connections,
                                                                              st.ab_requests, st.ab_seconds, k))
                _log(f"  {suite:6} {s.name:14} {r.client:5} c={st.ab_connections:<4} {r.rps:10.0f} req/s"
                     f" p99 {r.p99_ms:8.2f} ms{_cpu_text(used)}{'  ERRORS ' + str(r.errors) if r.errors else ''}")
                records.append(_record(suite, s, rep, r, **used))
    return records


class StatusSampler:
    """Reads a ukproxy's /status halfway through a run: open connections per worker at that moment."""

    def __init__(self, status: Callable[[], dict[str, Any]], after: float) -> None:
        self.result: dict[str, int] = {}
        self._status = status
        self._thread = threading.Thread(target=self._run, args=(after,), daemon=True)
        self._thread.start()

    def _run(self, after: float) -> None:
        time.sleep(after)
        try:
            self.result = {str(w["pid"]): w["connections"] for w in self._status()["workers"]}
        except OSError:
            self.result = {}

    def join(self) -> dict[str, int]:
        self._thread.join(10)
        return self.result


def accepted_per_worker(status: dict[str, Any]) -> dict[str, int]:
    return {str(w["pid"]): w["accepted"] for w in status["workers"]}


def spread_run(suite: str, s: Scenario, status: Callable[[], dict[str, Any]], rep: int, c: int,
               st: Settings, mode: str) -> dict[str, Any]:
    """One wrk run, plus how its connections spread over the workers (accepted delta, and open midway)."""
    before = accepted_per_worker(status())
    sampler = StatusSampler(status, st.wrk_seconds / 2 + 1.1)  # /status lags the workers by up to 1 s
    r = _guard(s, f"wrk c={c} {mode}", lambda: run_wrk(s, c, st.wrk_seconds))
    open_midway = sampler.join()
    time.sleep(1.2)
    after = accepted_per_worker(status())
    accepted = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in after}
    _log(f"  {suite:6} {s.name:14} wrk   c={c:<4} {r.rps:10.0f} req/s p99 {r.p99_ms:8.2f} ms"
         f"  accepted/worker {sorted(accepted.values())}  open midway {sorted(open_midway.values())}")
    return _record(suite, s, rep, r, mode=mode, accepted_per_worker=accepted, open_per_worker_midway=open_midway)
