"""`python -m bench.edge_zones [--seconds N]`: what the limit zones (ukproxy/edge/shared_zone.py) cost, and why
they take no lock per request.

Two parts, in one run:

- per operation, one process, plain Python: a limit_req check (lock-free: the worker writes its own TAT
  cell), the same check wrapped in the bucket's fcntl lock (the first design, a lock per request), the
  fcntl lock+unlock pair alone, a limit_conn acquire+release, allow/deny with a remembered verdict;
- two processes hammering one key of one zone file for a few seconds, as two workers behind one client
  (or a key = "site" zone) do: checks per second with and without the lock per check, and how many
  requests a limit of `RATE` r/s with a burst of `BURST` let through against the RATE x seconds + BURST + 1
  nginx's bucket allows. (With no burst, every moment the bucket is empty and neither process is on a CPU
  to check is lost for good: on a loaded machine that, not the zone, decides the count.)
  The lock-free zone may let a request through twice when both processes take the same place at once;
  this says how often that happens at full speed.

Writes bench/results/edge_zones.md and .json with the load average and the CPU model (docs/architecture.md,
"The edge").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.tools import cpu_model
from ukproxy.edge.access import AccessList
from ukproxy.edge.guard_config import _access_list
from ukproxy.edge.limits import REFUSED, ConnectionCount, RequestRate
from ukproxy.edge.shared_zone import SharedZone

RESULTS = Path(__file__).resolve().parent / "results"
KEY = b"127.0.0.1"
RATE = 2000.0  # r/s for the two-process accuracy run: far below what one process can check
BURST = 200  # a tenth of a second of it


def per_call_us(fn: Callable[[], object], n: int = 100_000) -> float:
    """The best of three timed loops, µs per call."""
    for _ in range(1000):
        fn()
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return round(best * 1e6, 2)


def locked_check(rate: RequestRate) -> Callable[[bytes], float]:
    """The check as the first design made it: the key's bucket locked around it (two fcntl calls)."""
    zone = rate.zone

    def check(key: bytes) -> float:
        bucket = zone.bucket(zone.entry_key(key))
        zone.lock(bucket)
        try:
            return rate.check(key)
        finally:
            zone.unlock(bucket)

    return check


def single(folder: str) -> dict[str, float]:
    req = SharedZone(os.path.join(folder, "single-req"), 1 << 20, 2)
    conn = SharedZone(os.path.join(folder, "single-conn"), 1 << 20, 8)
    rate = RequestRate(req, "z", 1e9, 1000, math.inf, 429)
    count = ConnectionCount(conn, "c", 1 << 30, 429)
    locked = locked_check(rate)
    fd = req.fd
    access = AccessList(_access_list(["allow 10.0.0.0/8", "deny 192.168.0.0/16", "allow all"]))
    import fcntl

    return {
        "limit_req check, lock-free (as shipped)": per_call_us(lambda: rate.check(KEY)),
        "limit_req check, fcntl lock per check (first design)": per_call_us(lambda: locked(KEY)),
        "fcntl lock + unlock of a bucket alone": per_call_us(
            lambda: (fcntl.lockf(fd, fcntl.LOCK_EX, 512, 0), fcntl.lockf(fd, fcntl.LOCK_UN, 512, 0))),
        "limit_conn acquire + release, lock-free (as shipped)": per_call_us(lambda: count.release(count.acquire(KEY))),
        "allow/deny, verdict remembered": per_call_us(lambda: access.allows(KEY)),
    }


def hammer(path: str, slot: int, seconds: float, rate: float, burst: int, locked: bool, out: str) -> None:
    """One of two processes: check KEY as fast as it can until `seconds` pass; write (checks, admitted)."""
    zone = SharedZone(path, 1 << 20, 2)
    limit = RequestRate(zone, "z", rate, burst, math.inf, 429, slot)
    check = locked_check(limit) if locked else limit.check
    checks = admitted = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            if check(KEY) != REFUSED:
                admitted += 1
        checks += 100
    Path(out).write_text(json.dumps([checks, admitted]))


def pair(folder: str, name: str, seconds: float, rate: float, burst: int, locked: bool) -> dict[str, float]:
    """Two forked processes on one zone file and one key; totals over both."""
    path = os.path.join(folder, name)
    outs = [os.path.join(folder, f"{name}.{i}") for i in range(2)]
    pids = []
    for slot in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                hammer(path, slot, seconds, rate, burst, locked, outs[slot])
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    checks = admitted = 0
    for out in outs:
        c, a = json.loads(Path(out).read_text())
        checks += c
        admitted += a
    return {"checks_per_s": round(checks / seconds), "admitted": admitted,
            "allowed": round(rate * seconds + burst + 1)}


def run(seconds: float) -> dict[str, object]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ukbench-zones-") as folder:
        ops = single(folder)
        never_refuses = {"lock-free": pair(folder, "free", seconds, 1e9, 1000, False),
                         "fcntl lock per check": pair(folder, "locked", seconds, 1e9, 1000, True)}
        accuracy = {"lock-free": pair(folder, "free-rate", seconds, RATE, BURST, False),
                    "fcntl lock per check": pair(folder, "locked-rate", seconds, RATE, BURST, True)}
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "seconds": seconds, "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "per_call_us": ops,
            "two_processes_never_refusing": never_refuses, "two_processes_at_rate": accuracy, "rate": RATE,
            "burst": BURST}


def render(r: dict[str, object]) -> str:
    lines = ["# The limit zones' cost: per operation, and two processes on one key", "",
             f"{r['started']}, {r['cpu']}, {r['cores']} cores; load average {r['loadavg_before']} before, "
             f"{r['loadavg_after']} after; plain Python (the edge modules are not compiled).", "",
             "| operation | µs per call |", "|---|---:|"]
    lines += [f"| {name} | {us} |" for name, us in r["per_call_us"].items()]  # type: ignore[attr-defined]
    lines += ["", f"Two processes checking one key for {r['seconds']} s each:", "",
              "| zone | checks/s (a limit that never refuses) | admitted at "
              f"{r['rate']:.0f} r/s, burst {r['burst']} | nginx's bucket allows |", "|---|---:|---:|---:|"]
    for name in ("lock-free", "fcntl lock per check"):
        free = r["two_processes_never_refusing"][name]  # type: ignore[index]
        rated = r["two_processes_at_rate"][name]  # type: ignore[index]
        lines.append(f"| {name} | {free['checks_per_s']:,} | {rated['admitted']:,} | {rated['allowed']:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_zones", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    result = run(args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_zones.json").write_text(json.dumps(result, indent=1) + "\n")
    text = render(result)
    (args.out / "edge_zones.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
