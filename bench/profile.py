"""Where a ukproxy worker's time goes under load: py-spy samples one worker while wrk runs.

    .venv/bin/python -m bench.profile [--protocol tcp|http] [--seconds 8] [--connections 64]

Needs py-spy (in the `bench` extra). Starts the native backend and one ukproxy (workers = usable CPUs),
samples the busiest worker, prints the top frames by own time and by total time, and writes the raw
collapsed stacks to bench/results/raw/. ukproxy runs as plain Python here (UKPROXY_PURE_PYTHON=1):
py-spy cannot see inside the mypyc-compiled request path, and the Python frames show where it spends.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench import nginx
from bench.clients import parse_wrk, wrk_argv
from bench.procs import Processes, free_port
from bench.settings import FULL
from bench.ukproxy_run import Ukproxy, config_text

RAW = Path(__file__).resolve().parent / "results" / "raw"


def top(collapsed: str, n: int = 25) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    return own.most_common(n), total.most_common(n), samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=("tcp", "http"), default="http")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("bench.profile: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    raw = RAW / time.strftime("profile-%Y%m%d-%H%M%S")
    raw.mkdir(parents=True, exist_ok=True)
    os.environ["UKPROXY_PURE_PYTHON"] = "1"  # inherited by the ukproxy it starts
    procs = Processes(raw)
    try:
        backend = free_port()
        nginx.start(procs, "backend-nginx", nginx.backend_conf(raw / "backend-nginx", FULL.workers, backend),
                    [backend])
        port, metrics = free_port(), free_port()
        uk = Ukproxy(procs, "ukproxy", config_text(workers=FULL.workers, metrics_port=metrics, reuseport=True,
                                                   accept_mutex=False, listeners=[(port, args.protocol)],
                                                   upstream=f'servers = ["127.0.0.1:{backend}"]'), metrics)
        uk.start([port, metrics])
        load = subprocess.Popen(wrk_argv(f"http://127.0.0.1:{port}/", args.connections, args.seconds + 2),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1)
            pids = uk.worker_pids()
            cpu = {pid: psutil.Process(pid).cpu_percent(0.5) for pid in pids}
            busiest = max(cpu, key=lambda p: cpu[p])
            out_path = raw / f"worker-{busiest}.collapsed"
            subprocess.run([spy, "record", "-p", str(busiest), "-d", str(int(args.seconds)), "-r", "200",
                            "--nonblocking", "-f", "raw", "-o", str(out_path)], check=True, capture_output=True,
                           timeout=args.seconds + 30)
            out, _ = load.communicate(timeout=args.seconds + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        result = parse_wrk(out, args.connections)
        own, total, samples = top(out_path.read_text())
    finally:
        procs.stop_all()
    print(f"ukproxy {args.protocol}, reuseport, {args.connections} wrk connections: {result.rps:.0f} req/s, "
          f"{result.errors} errors; worker {busiest} at {cpu[busiest]:.0f}% CPU, {samples} samples\n")
    print("own time:")
    for frame, c in own:
        print(f"  {100 * c / samples:5.1f}%  {frame}")
    print("\ntotal time (frame on the stack):")
    for frame, c in total:
        print(f"  {100 * c / samples:5.1f}%  {frame}")
    print(f"\ncollapsed stacks: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
