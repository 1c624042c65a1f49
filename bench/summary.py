"""Medians (with min and max) over the repetitions of each (suite, scenario, client, connections)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

REFERENCE = {"l4": "nginx stream", "l7": "nginx http"}


@dataclass
class Cell:
    suite: str
    scenario: str
    client: str
    connections: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    errors: int
    runs: int
    layer: str
    placement: str
    mode: str = ""
    cpu_user_us: float | None = None  # the proxy's CPU per request (bench/cpu.py), median over the runs
    cpu_system_us: float | None = None


def cells(records: list[dict[str, Any]]) -> list[Cell]:
    groups: dict[tuple[str, str, str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        key = (r["suite"], r["scenario"], r["client"], r["connections"], r.get("mode", ""))
        groups.setdefault(key, []).append(r)
    out = []
    for (suite, scenario, client, conns, mode), rs in groups.items():
        rps = [r["rps"] for r in rs]
        measured = [r for r in rs if "cpu_us" in r]
        user = statistics.median(r["cpu_user_us"] for r in measured) if measured else None
        system = statistics.median(r["cpu_system_us"] for r in measured) if measured else None
        out.append(Cell(suite, scenario, client, conns, statistics.median(rps), min(rps), max(rps),
                        statistics.median(r["p50_ms"] for r in rs), statistics.median(r["p99_ms"] for r in rs),
                        sum(r["errors"] for r in rs), len(rs), rs[0]["layer"], rs[0]["client_placement"], mode,
                        user, system))
    return out


def find(cs: list[Cell], suite: str, scenario: str, client: str, connections: int) -> Cell | None:
    for c in cs:
        if (c.suite, c.scenario, c.client, c.connections) == (suite, scenario, client, connections):
            return c
    return None


def ratio(a: Cell | None, b: Cell | None, attr: str = "rps") -> float | None:
    if a is None or b is None or not getattr(b, attr):
        return None
    return getattr(a, attr) / getattr(b, attr)


def reference(cs: list[Cell], c: Cell) -> Cell | None:
    ref = REFERENCE.get(c.layer)
    return find(cs, c.suite, ref, c.client, c.connections) if ref else None


def targets(cs: list[Cell], connections: dict[str, int], ab_connections: int) -> list[dict[str, Any]]:
    """The issue's targets, checked on the native backend (and shown for the VM pool too)."""
    rows = []
    for suite in ("native", "vm"):
        for client, conns in (("wrk", connections[suite]), ("ab -k", ab_connections), ("ab", ab_connections)):
            tcp = find(cs, suite, "ukproxy tcp", client, conns)
            stream = find(cs, suite, "nginx stream", client, conns)
            http = find(cs, suite, "ukproxy http", client, conns)
            nhttp = find(cs, suite, "nginx http", client, conns)
            checks = [
                ("ukproxy tcp req/s >= 1.0x nginx stream", ratio(tcp, stream), 1.0, ">="),
                ("ukproxy http req/s >= 0.8x nginx http", ratio(http, nhttp), 0.8, ">="),
                ("ukproxy http p99 <= 1.5x nginx http", ratio(http, nhttp, "p99_ms"), 1.5, "<="),
            ]
            for name, value, bound, op in checks:
                if value is None:
                    continue
                met = value >= bound if op == ">=" else value <= bound
                errors = sum(c.errors for c in (tcp, stream, http, nhttp) if c is not None)
                rows.append({"suite": suite, "client": client, "connections": conns, "target": name,
                             "value": round(value, 3), "met": met, "errors_in_inputs": errors})
    return rows
