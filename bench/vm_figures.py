"""Figures about the VMs themselves: boot-time distribution, memory, cold vs warm pool, scale-up, replacement.

Boots are timed with bench.unikernel_boot (its own throwaway namespace, exec → `ready` → first 200);
everything else runs a ukproxy master with its own backend namespace `ukb-<hex>`, one worker, and reads
its log ("VM ... up ... ready in N ms", "VM ... in rotation"). Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.clients import parse_wrk, wrk_argv
from bench.procs import Processes, on_free_ports
from bench.settings import Settings
from bench.ukproxy_run import VM_UP, Ukproxy, config_text

IN_ROTATION = r"VM \S+ in rotation"


def _log(msg: str) -> None:
    print(f"  vmfigs {msg}", file=sys.stderr, flush=True)


def dist(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)

    def q(p: float) -> float:
        k = (len(s) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return {"n": len(s), "median": statistics.median(s), "min": s[0], "max": s[-1], "p5": q(0.05), "p95": q(0.95)}


def get(port: int, path: str = "/health", timeout: float = 30.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def boots(procs: Processes, n: int) -> dict[str, Any]:
    from bench.unikernel_boot import boot_once
    from bench.unikernel_harness import Lab

    lab = Lab(procs.raw_dir)
    procs.namespaces.append(lab.netns.name)  # deleted at the end even if close() is never reached
    ready, first = [], []
    try:
        for i in range(n):
            r, f = boot_once(lab, f"boot-{i}")
            ready.append(r)
            first.append(f)
    finally:
        lab.close()
    _log(f"boots: n={n} ready median {statistics.median(ready):.0f} ms, first 200 {statistics.median(first):.0f} ms")
    return {"n": n, "ready_ms": dist(ready), "first_200_ms": dist(first),
            "ready_samples_ms": ready, "first_200_samples_ms": first}


def _proxy(procs: Processes, name: str, pool: str, protocol: str) -> tuple[Ukproxy, int]:
    def start(ports: list[int]) -> tuple[Ukproxy, int]:
        port, metrics = ports
        uk = Ukproxy(procs, name, config_text(workers=1, metrics_port=metrics, listeners=[(port, protocol)],
                                              upstream="vm", netns=procs.new_netns_name(), pool=pool), metrics)
        return uk.start([port, metrics]), port

    return on_free_ports(2, start)


def _wait_workers_ready(uk: Ukproxy, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            workers = uk.status()["workers"]
            if workers and all(w["state"] == "ready" for w in workers):
                return
        time.sleep(0.02)
    raise RuntimeError(f"workers not ready within {timeout:.0f} s:\n{uk.log()[-3000:]}")


def cold_warm(procs: Processes, samples: int) -> dict[str, Any]:
    """First request through a tcp listener whose pool has min = 0 (the VM boots on demand), then warm ones.
    (A tcp listener: the http proxy answers 503 at once when its pool is empty instead of waiting for a boot.)
    Timed from when the workers are ready: the listening sockets exist before the workers do, and a
    request sent earlier waits for a worker to start (hundreds of ms) as well as for a VM."""
    cold, warm = [], []
    for i in range(samples):
        uk, port = _proxy(procs, f"ukproxy-cold-{i}", "min = 0\nmax = 1\noverflow = \"spawn\"", "tcp")
        try:
            _wait_workers_ready(uk)
            t = time.monotonic()
            status = get(port)
            cold.append((time.monotonic() - t) * 1000)
            if status != 200:
                raise RuntimeError(f"cold request answered {status}:\n{uk.log()[-3000:]}")
            for _ in range(5):
                t = time.monotonic()
                if get(port) != 200:
                    raise RuntimeError("warm request failed")
                warm.append((time.monotonic() - t) * 1000)
        finally:
            uk.stop()
    _log(f"cold median {statistics.median(cold):.0f} ms, warm median {statistics.median(warm):.1f} ms")
    return {"n": samples, "cold_ms": dist(cold), "warm_ms": dist(warm), "cold_samples_ms": cold}


def _rotation_times(uk: Ukproxy, target: int, t0: float, deadline: float) -> list[float]:
    steps: list[float] = []
    while time.monotonic() < deadline:
        n = len(re.findall(IN_ROTATION, uk.log()))
        while len(steps) < n:
            steps.append(time.monotonic() - t0)
        if n >= target:
            break
        time.sleep(0.02)
    return steps


def rss_mib(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.append(psutil.Process(pid).memory_info().rss / 2**20)
    return out


def scale(procs: Processes, st: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step from idle to `conns` keep-alive connections on a tcp listener (each holds one VM slot)."""
    lo, hi, per_vm, conns = 1, 4, 8, 32
    seconds = 8 if st.reps == 1 else 15
    uk, port = _proxy(procs, "ukproxy-scale", f"min = {lo}\nmax = {hi}\nmax_conns = {per_vm}\noverflow = \"spawn\"\n"
                                              "queue_timeout = \"20s\"", "tcp")
    try:
        uk.wait_log(IN_ROTATION, lo, timeout=60)
        t0 = time.monotonic()
        load = subprocess.Popen(wrk_argv(f"http://127.0.0.1:{port}/health", conns, seconds), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            steps = _rotation_times(uk, hi, t0, t0 + seconds)
            out, _ = load.communicate(timeout=seconds + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        result = parse_wrk(out, conns)
        pids = [int(m[4]) for m in VM_UP.findall(uk.log())]
        rss = rss_mib(pids)
    finally:
        uk.stop()
    if len(steps) < hi:
        raise RuntimeError(f"pool reached {len(steps)} of {hi} VMs within {seconds}s of the step:\n{uk.log()[-3000:]}")
    _log(f"scale {lo}->{hi}: {steps[-1]:.2f} s; RSS {[round(r, 1) for r in rss]} MiB")
    return ({"min": lo, "max": hi, "max_conns": per_vm, "connections": conns, "steps_s": steps[lo:],
             "seconds_to_max": steps[-1], "rps": result.rps, "errors": result.errors,
             "error_detail": result.error_detail},
            {"guest_ram_mib": 16, "n": len(rss), "rss_mib": rss, "rss_mib_median": statistics.median(rss),
             "rss_mib_min": min(rss), "rss_mib_max": max(rss)})


def replace(procs: Processes, samples: int) -> dict[str, Any]:
    uk, port = _proxy(procs, "ukproxy-replace", "min = 1\nmax = 1\noverflow = \"queue\"\nqueue_timeout = \"20s\"",
                      "tcp")
    in_rotation, serving = [], []
    try:
        uk.wait_log(IN_ROTATION, 1, timeout=60)
        for i in range(samples):
            victim = uk.vms_up()[-1]
            t0, wall0 = time.monotonic(), time.time()
            os.kill(victim.pid, signal.SIGKILL)
            served = None
            deadline = t0 + 30
            while time.monotonic() < deadline and served is None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if get(port, timeout=2) == 200:
                        served = time.monotonic() - t0
                time.sleep(0.02)
            uk.wait_log(IN_ROTATION, i + 2, timeout=max(1.0, deadline - time.monotonic()))
            if served is None:
                raise RuntimeError(f"no 200 within 30 s of killing VM {victim.vm_id}:\n{uk.log()[-3000:]}")
            in_rotation.append(_line_time(uk.log(), i + 2) - wall0)
            serving.append(served)
    finally:
        uk.stop()
    _log(f"replace: in rotation {statistics.median(in_rotation):.2f} s, serving {statistics.median(serving):.2f} s")
    return {"n": samples, "in_rotation_s": dist(in_rotation), "serving_s": dist(serving)}


def _line_time(log: str, nth: int) -> float:
    """Wall-clock time (the log line's own timestamp) of the nth "in rotation" line."""
    lines = [line for line in log.splitlines() if re.search(IN_ROTATION, line)]
    stamp = datetime.strptime(lines[nth - 1][:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def pool_boots(raw: Path) -> dict[str, Any] | None:
    ms = [float(m[5]) for log in raw.rglob("*.log") for m in VM_UP.findall(log.read_text(errors="replace"))]
    return dist(ms) if ms else None


def run(procs: Processes, st: Settings, records: list[dict[str, Any]]) -> dict[str, Any]:
    del records
    out: dict[str, Any] = {"boot": boots(procs, st.boots)}
    out["cold_warm"] = cold_warm(procs, st.cold_samples)
    out["scale"], out["memory"] = scale(procs, st)
    out["replace"] = replace(procs, st.kill_samples)
    pb = pool_boots(procs.raw_dir)
    if pb:
        out["pool_boot_ms"] = pb
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.vm_figures [--cold N]`: the cold-pool figure alone (the full set runs in `python -m bench`)."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description="cold first request through ukproxy to a pool with min = 0")
    parser.add_argument("--cold", type=int, default=10, help="samples (default 10)")
    args = parser.parse_args(argv)
    procs = Processes(Path(tempfile.mkdtemp(prefix="ukproxy-vmfigs-")))
    try:
        result = cold_warm(procs, args.cold)
    finally:
        procs.stop_all()
    print(json.dumps({k: v for k, v in result.items() if k != "cold_samples_ms"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
