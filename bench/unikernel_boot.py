"""Boot-time and footprint benchmark of the backend unikernel under QEMU TCG.

    .venv/bin/python -m bench.unikernel_boot [--boots 30] [--json PATH] [--quick]

Measures, in a throwaway network namespace (root needed):
  * time from QEMU exec to the `ready` line and to the first HTTP 200 (median, p95);
    the HTTP probe is started before QEMU and told to go when `ready` appears, as a
    launcher would, so its own start-up is not counted;
  * image size, QEMU's RSS, the smallest -m that boots and serves;
  * host CPU of an idle VM over 10 s (psutil, percent of one core);
  * wrk requests/s against one VM, keep-alive, 1 and 32 connections.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.unikernel_harness import IMAGE, Lab, build_image, is_root

# Waits for "go" on stdin, then tries GET /health until a 200; prints the monotonic time.
PROBE = r'''
import socket, sys, time
ip = sys.argv[1]
sys.stdin.readline()
req = b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n"
while True:
    try:
        with socket.create_connection((ip, 80), timeout=0.05) as s:
            s.settimeout(2)
            s.sendall(req)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                print(time.monotonic(), flush=True)
                break
    except OSError:
        time.sleep(0.001)
'''


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def boot_once(lab: Lab, name: str, memory: str = "16") -> tuple[float, float]:
    """Returns (ms to ready, ms to first 200) measured from QEMU's exec."""
    ip = lab.netns.address(lab._next_host)
    probe = subprocess.Popen(lab.netns.cmd(sys.executable, "-c", PROBE, ip),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.15)   # let the probe's interpreter start before the clock runs
        vm = lab.boot(name, memory=memory, wait=False)
        vm.wait_ready(30)
        assert probe.stdin
        probe.stdin.write("go\n")
        probe.stdin.flush()
        out, _ = probe.communicate(timeout=30)
        first_200 = float(out.strip())
        return (vm.ready_at - vm.started_at) * 1000, (first_200 - vm.started_at) * 1000
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        vm = lab.vms[-1]
        vm.stop()


def smallest_memory(lab: Lab) -> int:
    """Smallest -m (MiB) with which the VM boots and serves a 200."""
    best = None
    for mib in (16, 12, 10, 8, 7, 6, 5, 4):
        try:
            boot_once(lab, f"mem-{mib}", memory=str(mib))
            best = mib
        except Exception:
            break
    return best or -1


def wrk(lab: Lab, ip: str, conns: int, seconds: int, path: str = "/health") -> float:
    r = lab.netns.run("wrk", "-t1" if conns == 1 else "-t2", f"-c{conns}", f"-d{seconds}s",
                      f"http://{ip}{path}", timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    if not m:
        raise RuntimeError(f"wrk failed:\n{r.stdout}\n{r.stderr}")
    return float(m.group(1))


def ok(cond: bool) -> str:
    return "ok" if cond else "MISSED"


def summary(r: dict) -> str:
    return "\n".join([
        f"boots (TCG)         {r['boots']}",
        f"exec -> ready       median {r['ready_ms']['median']:.1f} ms, p95 {r['ready_ms']['p95']:.1f} ms",
        f"exec -> first 200   median {r['first_200_ms']['median']:.1f} ms, p95 {r['first_200_ms']['p95']:.1f} ms"
        f"   [target 150 ms: {ok(r['first_200_ms']['median'] <= 150)}]",
        f"image               {r['image_bytes'] / 1024:.0f} KiB   [target 1 MiB: {ok(r['image_bytes'] <= 2**20)}]",
        f"guest RAM           runs with -m {r['min_guest_ram_mib']} MiB, benched at -m {r['guest_ram_mib']}"
        f"   [target 16: {ok(0 < r['min_guest_ram_mib'] <= 16)}]",
        f"QEMU RSS            {r['qemu_rss_mib_idle']:.1f} MiB idle, {r['qemu_rss_mib_after_load']:.1f} MiB after wrk",
        f"idle host CPU       {r['idle_cpu_percent']:.2f} % of a core over {r['idle_seconds']:.0f} s"
        f"   [target 1 %: {ok(r['idle_cpu_percent'] < 1)}]",
        f"wrk /health         {r['wrk_rps']['c1']:.0f} req/s (1 conn), {r['wrk_rps']['c32']:.0f} req/s (32 conns)",
        f"wrk /static/4 KiB   {r['wrk_rps']['c32_static_4k']:.0f} req/s (32 conns)",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boots", type=int, default=30)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="5 boots, 3 s idle, 3 s wrk")
    args = ap.parse_args()
    if args.quick:
        args.boots, args.idle_seconds, args.wrk_seconds = 5, 3, 3
    if not is_root():
        print("needs root: network namespaces, bridges and TAPs", file=sys.stderr)
        return 2

    build_image()
    res: dict = {"image_bytes": IMAGE.stat().st_size, "accel": "tcg"}
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp))
        try:
            ready, first = [], []
            for i in range(args.boots):
                r, f = boot_once(lab, f"boot-{i}")
                ready.append(r)
                first.append(f)
            res["boots"] = args.boots
            res["ready_ms"] = {"median": statistics.median(ready), "p95": pct(ready, 0.95)}
            res["first_200_ms"] = {"median": statistics.median(first), "p95": pct(first, 0.95)}
            res["min_guest_ram_mib"] = smallest_memory(lab)

            vm = lab.boot("bench-0")
            qemu = psutil.Process(vm.proc.pid)
            time.sleep(1)
            res["qemu_rss_mib_idle"] = qemu.memory_info().rss / 2**20
            qemu.cpu_percent(None)
            time.sleep(args.idle_seconds)
            res["idle_cpu_percent"] = qemu.cpu_percent(None)
            res["idle_seconds"] = args.idle_seconds
            res["wrk_rps"] = {
                "c1": wrk(lab, vm.ip, 1, args.wrk_seconds),
                "c32": wrk(lab, vm.ip, 32, args.wrk_seconds),
                "c32_static_4k": wrk(lab, vm.ip, 32, args.wrk_seconds, "/static/small.txt"),
            }
            res["qemu_rss_mib_after_load"] = qemu.memory_info().rss / 2**20
            res["guest_ram_mib"] = 16
        finally:
            lab.close()

    print(summary(res))
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
