"""GET /status: nginx's stub_status figures, a row per worker process and a row per VM, as one JSON object.

Connection figures come from the workers' multiprocess metric files (flushed every second), so
they lag by at most a second; who the workers are (pid, slot, CPU, generation, age) comes from
the master itself. VM rows, and anything else, come from status providers the master registers
(`MasterObservability.add_status_provider("vms", fleet.status_rows)`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

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
            }
            for w in sorted(workers, key=lambda w: (w.generation, w.slot))
        ],
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
    return status
