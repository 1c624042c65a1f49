"""The C tcp relay against the Python splice and nginx stream: a quick interleaved A/B (a few minutes).

One nginx backend; three proxies in front of it: nginx stream, ukproxy with its tcp listener relayed in C
(ukproxy/native/tcp_relay.c) and ukproxy with `tcp_relay = "python"` (proxy/tcp.py). Rounds interleave the
three so the machine's load moves them alike; each run reports requests/s, p99 and the proxy's CPU µs per
request from /proc (every process of its tree), which moves less with a shared machine's load than rates.
Clients: ab -c32 without keep-alive (a new connection per request) and wrk -c64 (keep-alive).
`python -m bench.tcp_relay [--rounds 3] [--seconds 5]`; docs/architecture.md, "Native paths".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import nginx, tools
from bench.clients import RunResult, ab, wrk
from bench.cpu import per_request_us, tree_times
from bench.procs import Processes, free_port
from bench.ukproxy_run import Ukproxy, config_text

PROXIES = ("nginx stream", "ukproxy C relay", "ukproxy tcp.py")


def _backend(procs: Processes, home: Path, workers: int) -> list[int]:
    """nginx's fixed answer on one port per proxy: a run that leaves tens of thousands of connections in
    TIME_WAIT then uses up the local ports toward its own port only, not toward the next proxy's."""
    ports = [free_port() for _ in PROXIES]
    conf = nginx.backend_conf(home / "backend", workers, ports[0])
    line = f"listen 127.0.0.1:{ports[0]} backlog=4096;"
    conf = conf.replace(line, " ".join(f"listen 127.0.0.1:{p} backlog=4096;" for p in ports))
    nginx.start(procs, "backend", conf, ports)
    return ports


def _proxies(procs: Processes, home: Path, backends: list[int], workers: int) -> dict[str, tuple[int, int]]:
    """name → (port, root pid) of each proxy in front of its backend port."""
    out: dict[str, tuple[int, int]] = {}
    port = free_port()
    started = nginx.start(procs, "nginx-stream", nginx.proxy_conf(home / "nginx-stream", workers,
                                                                   [f"127.0.0.1:{backends[0]}"], port, None), [port])
    out["nginx stream"] = (port, started.pid)
    for name, relay, backend in (("ukproxy C relay", "native", backends[1]), ("ukproxy tcp.py", "python", backends[2])):
        port = free_port()
        text = config_text(workers=workers, metrics_port=free_port(), listeners=[(port, "tcp")],
                           upstream=f'servers = ["127.0.0.1:{backend}"]')
        text = text.replace('protocol = "tcp"\n', f'protocol = "tcp"\ntcp_relay = "{relay}"\n', 1)
        proxy = Ukproxy(procs, name.replace(" ", "-").replace(".", ""), text, free_port()).start([port])
        assert proxy.proc is not None
        out[name] = (port, proxy.proc.pid)
    return out


def _run(kind: str, url: str, seconds: float) -> RunResult:
    if kind == "ab -c32 close":
        return ab(url, 32, 1_000_000, keepalive=False, time_limit=seconds)
    return wrk(url, 64, seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tcp_relay")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    tools.require("nginx", "wrk", "ab")
    with tempfile.TemporaryDirectory(prefix="ukproxy-bench-tcp-relay-") as tmp:
        home = Path(tmp)
        procs = Processes(home)
        try:
            proxies = _proxies(procs, home, _backend(procs, home, args.workers), args.workers)
            runs: dict[str, dict[str, list[dict[str, float]]]] = {}
            load_before = [round(x, 2) for x in os.getloadavg()]
            for rnd in range(args.rounds):
                order = [*PROXIES[rnd % 3:], *PROXIES[:rnd % 3]]  # each proxy first, second and third in turn
                for kind in ("ab -c32 close", "wrk -c64"):
                    for name in order:
                        port, root = proxies[name]
                        before = tree_times(root)
                        r = _run(kind, f"http://127.0.0.1:{port}/", args.seconds)
                        cpu = per_request_us(before, tree_times(root), r.requests)
                        runs.setdefault(kind, {}).setdefault(name, []).append(
                            {"rps": r.rps, "p99_ms": r.p99_ms, "errors": r.errors, **cpu})
            result: dict[str, Any] = {"machine": tools.machine(), "load_before": load_before,
                                      "load_after": [round(x, 2) for x in os.getloadavg()], "median": {},
                                      "runs": runs}
            for kind, by_proxy in runs.items():
                med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in by_proxy.items()}
                ref = med["nginx stream"]
                for m in med.values():
                    m["rps_vs_nginx"] = round(m["rps"] / ref["rps"], 3) if ref["rps"] else 0.0
                    m["p99_vs_nginx"] = round(m["p99_ms"] / ref["p99_ms"], 3) if ref["p99_ms"] else 0.0
                result["median"][kind] = med
        finally:
            procs.stop_all()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
