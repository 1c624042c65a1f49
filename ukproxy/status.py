"""GET /status: nginx's stub_status figures, a row per worker process, per upstream server and per VM, as JSON.

Connection figures come from the workers' multiprocess metric files (flushed every second), so
they lag by at most a second; who the workers are (pid, slot, CPU, generation, age) comes from
the master itself. VM rows, and anything else, come from status providers the master registers
(`MasterObservability.add_status_provider("vms", fleet.status_rows)`). Workers and VMs carry the CPU time
their process has used (`cpu_seconds`), from which a reader makes a CPU share between two readings, as the
page for people does (`status_page.py`) with request rates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import psutil

log = logging.getLogger("ukproxy.status")

StatusProvider = Callable[[], Any]


class WorkerLike(Protocol):
    slot: int
    generation: int
    cpu: int | None
    started_at: float
    ready: bool
    quitting: bool

    @property
    def pid(self) -> int: ...


def _sum(samples: dict[str, list[Any]], name: str, **match: str) -> float:
    return sum(s.value for s in samples.get(name, ()) if all(s.labels.get(k) == v for k, v in match.items()))


def _per_pid(samples: dict[str, list[Any]], name: str) -> dict[str, float]:
    return {s.labels.get("pid", ""): s.value for s in samples.get(name, ())}


def _last_check(samples: dict[str, list[Any]], labels: dict[str, str]) -> dict[str, Any]:
    """When the server's last active health check ran (Unix time, and seconds ago) and whether it passed."""
    def value(name: str) -> float | None:
        found = [s.value for s in samples.get(name, ()) if all(s.labels.get(k) == v for k, v in labels.items())]
        return max(found) if found else None

    at = value("ukproxy_upstream_server_last_check_timestamp_seconds")
    ok = value("ukproxy_upstream_server_check_ok")
    if not at:
        return {"last_health_check": None, "last_health_check_at": None, "health": None}
    return {"last_health_check": round(max(0.0, time.time() - at), 1), "last_health_check_at": round(at, 3),
            "health": "pass" if ok else "fail"}


def cpu_seconds(pid: Any) -> float | None:
    """User and system CPU time a process has used, or None when it is gone (or no pid is known)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return round(times.user + times.system, 2)


def _upstreams(samples: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Per upstream, its requests and failures, and per server (a static address or a VM's id) what the
    workers' metrics say of it: in flight, requests sent, the last active health check."""
    servers: dict[str, set[str]] = {}
    for name in ("ukproxy_upstream_server_active", "ukproxy_upstream_server_requests_total",
                 "ukproxy_upstream_server_check_ok"):
        for s in samples.get(name, ()):
            if "upstream" in s.labels and "server" in s.labels:
                servers.setdefault(s.labels["upstream"], set()).add(s.labels["server"])
    rows = []
    for upstream in sorted(servers):
        rows.append({
            "name": upstream,
            "requests": int(_sum(samples, "ukproxy_requests_total", upstream=upstream)),
            "failures": int(_sum(samples, "ukproxy_upstream_failures_total", upstream=upstream)),
            "servers": [
                {"server": server,
                 "active": int(_sum(samples, "ukproxy_upstream_server_active", upstream=upstream, server=server)),
                 "requests": int(_sum(samples, "ukproxy_upstream_server_requests_total", upstream=upstream,
                                      server=server)),
                 **_last_check(samples, {"upstream": upstream, "server": server})}
                for server in sorted(servers[upstream])
            ],
        })
    return rows


def _worker_state(w: WorkerLike) -> str:
    return "quitting" if w.quitting else "ready" if w.ready else "starting"


def build_status(families: Iterable[Any], workers: Iterable[WorkerLike], generation: int, started_at: float,
                 providers: dict[str, StatusProvider], version: str) -> dict[str, Any]:
    samples: dict[str, list[Any]] = {}
    for family in families:
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    reading = _sum(samples, "ukproxy_connections_active", state="reading")
    writing = _sum(samples, "ukproxy_connections_active", state="writing")
    waiting = _sum(samples, "ukproxy_connections_active", state="waiting")
    connections = _per_pid(samples, "ukproxy_worker_connections")
    accepted = _per_pid(samples, "ukproxy_worker_accepted_connections")
    now = time.monotonic()
    status: dict[str, Any] = {
        "version": version,
        "master": {"pid": os.getpid(), "generation": generation, "uptime": round(now - started_at, 1)},
        "active": int(reading + writing + waiting),
        "accepts": int(_sum(samples, "ukproxy_connections_accepted_total")),
        "handled": int(_sum(samples, "ukproxy_connections_handled_total")),
        "requests": int(_sum(samples, "ukproxy_requests_total")),
        "reading": int(reading),
        "writing": int(writing),
        "waiting": int(waiting),
        "workers": [
            {
                "pid": w.pid,
                "slot": w.slot,
                "cpu": w.cpu,
                "generation": w.generation,
                "state": _worker_state(w),
                "connections": int(connections.get(str(w.pid), 0)),
                "accepted": int(accepted.get(str(w.pid), 0)),
                "uptime": round(now - w.started_at, 1),
                "cpu_seconds": cpu_seconds(w.pid),
            }
            for w in sorted(workers, key=lambda w: (w.generation, w.slot))
        ],
        "upstreams": _upstreams(samples),
        "vms": [],
    }
    for name, provider in providers.items():
        try:
            status[name] = provider()
        except Exception as e:  # a broken provider must not take /status down
            log.exception("status provider %r failed", name)
            status[name] = {"error": str(e)}
    if isinstance(status["vms"], list):
        for vm in status["vms"]:  # what the workers' pools know of each VM, summed over the workers
            labels = {"upstream": str(vm.get("upstream")), "server": str(vm.get("id"))}
            vm["active"] = int(_sum(samples, "ukproxy_upstream_server_active", **labels))
            vm["requests"] = int(_sum(samples, "ukproxy_upstream_server_requests_total", **labels))
            vm.update(_last_check(samples, labels))
            vm["cpu_seconds"] = cpu_seconds(vm.get("pid"))
    return status
