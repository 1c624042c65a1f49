"""ukproxy tcp with accept_mutex on, off, and reuseport: throughput and how evenly workers take connections."""

from __future__ import annotations

from typing import Any

from bench.procs import Processes, on_free_ports
from bench.runner import spread_run
from bench.scenarios import Scenario
from bench.settings import Settings
from bench.ukproxy_run import Ukproxy, config_text

MODES = {
    "accept_mutex on": {"accept_mutex": True, "reuseport": False},
    "accept_mutex off": {"accept_mutex": False, "reuseport": False},
    "reuseport": {"accept_mutex": False, "reuseport": True},
}


def run(procs: Processes, st: Settings, backend: str, path: str) -> list[dict[str, Any]]:
    started: dict[str, tuple[Scenario, Ukproxy]] = {}
    for mode, flags in MODES.items():
        name = "ukproxy-" + mode.replace(" ", "-")

        def start(ports: list[int], name: str = name, flags: dict[str, bool] = flags) -> tuple[Ukproxy, int]:
            port, metrics = ports
            uk = Ukproxy(procs, name, config_text(workers=st.workers, metrics_port=metrics, listeners=[(port, "tcp")],
                                                  upstream=f'servers = ["{backend}"]', **flags), metrics)
            return uk.start([port, metrics]), port

        uk, port = on_free_ports(2, start)
        started[mode] = (Scenario(f"tcp {mode}", "native", "ukproxy", "l4", [f"http://127.0.0.1:{port}{path}"]), uk)
    records = []
    try:
        modes = list(started)
        for rep in range(st.reps):
            for c in st.mode_connections:
                for i in range(len(modes)):
                    mode = modes[(i + rep) % len(modes)]
                    s, uk = started[mode]
                    records.append(spread_run("modes", s, uk.status, rep, c, st, mode))
    finally:
        for _s, uk in started.values():
            uk.stop()
    return records
