"""`python -m bench.kv [--quick]`: kv's code against redis-server, natively, in one run, as ratios.

kv-server is the kv unikernel's protocol, store and log built as a Linux process (unikernels/host/), so
this measures the service's code, not the VM. Both servers are single-threaded, on loopback ports, driven
by the same redis-benchmark (-t set,get,incr, 50 clients) without and with pipelining (-P 1, -P 16), in
two settings: in memory (no log; Redis with appendonly off and no snapshots) and with an append-only log
synced on every write (appendfsync always for both). Each figure is the median of the repetitions,
interleaved so drift hits both. Writes bench/results/kv.md and kv.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import free_port, terminate, wait_for
from bench.report import write_results
from bench.tools import cpu_model, require

REPO = Path(__file__).resolve().parent.parent
KV_SERVER = REPO / "unikernels" / "build" / "host" / "kv-server"
RESULTS = Path(__file__).resolve().parent / "results"
TESTS = ("SET", "GET", "INCR")


class Server:
    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port = argv, port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self.pong, f"PONG on port {port}", 10, self.proc)
        except RuntimeError:
            self.stop()
            raise

    def pong(self) -> bool:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True, text=True)
        return done.stdout.strip() == "PONG"

    def stop(self) -> None:
        terminate(self.proc)


def start(kind: str, logged: bool, workdir: Path) -> Server:
    port = free_port()
    data = Path(tempfile.mkdtemp(dir=workdir))
    if kind == "kv":
        log = ["--dir", str(data), "--appendfsync", "always"] if logged else []
        argv = [str(KV_SERVER), "--port", str(port), *log]
    else:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data),
                "--appendonly", "yes" if logged else "no", "--appendfsync", "always", "--protected-mode", "no"]
    return Server(argv, port)


def benchmark(port: int, requests: int, pipeline: int) -> dict[str, dict[str, float]]:
    done = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get,incr", "-n", str(requests),
                           "-c", "50", "-P", str(pipeline), "-r", "100000", "--csv"],
                          capture_output=True, text=True, timeout=600)
    rows = {r["test"]: r for r in csv.DictReader(io.StringIO(done.stdout))}
    if set(TESTS) - rows.keys():
        raise RuntimeError(f"redis-benchmark gave no figures for port {port}: {done.stderr[-500:]}")
    return {t: {"rps": float(rows[t]["rps"]), "p99_ms": float(rows[t]["p99_latency_ms"])} for t in TESTS}


def run(quick: bool) -> dict[str, object]:
    reps = 1 if quick else 3
    records = []
    with tempfile.TemporaryDirectory(prefix="ukbench-kv-") as tmp:
        for logged in (False, True):
            for pipeline in (1, 16):
                requests = (20_000 if quick else 100_000) * (4 if pipeline > 1 else 1)
                if logged and pipeline == 1:
                    requests //= 4   # one fsync per loop turn: far fewer writes per second
                samples: dict[str, list[dict[str, dict[str, float]]]] = {"kv": [], "redis": []}
                for _ in range(reps):
                    for kind in ("kv", "redis"):
                        server = start(kind, logged, Path(tmp))
                        try:
                            samples[kind].append(benchmark(server.port, requests, pipeline))
                        finally:
                            server.stop()
                for test in TESTS:
                    kv = statistics.median(s[test]["rps"] for s in samples["kv"])
                    redis = statistics.median(s[test]["rps"] for s in samples["redis"])
                    records.append({
                        "setting": "appendfsync always" if logged else "in memory", "pipeline": pipeline,
                        "test": test, "kv_rps": kv, "redis_rps": redis, "ratio": kv / redis,
                        "kv_p99_ms": statistics.median(s[test]["p99_ms"] for s in samples["kv"]),
                        "redis_p99_ms": statistics.median(s[test]["p99_ms"] for s in samples["redis"]),
                    })
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(), "quick": quick,
            "repetitions": reps, "redis": version, "records": records}


def render(result: dict[str, object]) -> str:
    lines = [
        "# kv against redis-server (natively, redis-benchmark -c 50)", "",
        f"{result['started']}, {result['cpu']}, median of {result['repetitions']} interleaved runs; "
        f"{result['redis']}.", "",
        "| setting | -P | command | kv req/s | redis req/s | kv / redis | kv p99 ms | redis p99 ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["records"]:  # type: ignore[attr-defined]
        lines.append(f"| {r['setting']} | {r['pipeline']} | {r['test']} | {r['kv_rps']:,.0f} | "
                     f"{r['redis_rps']:,.0f} | {r['ratio']:.2f}x | {r['kv_p99_ms']:.2f} | {r['redis_p99_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition, fewer requests")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    require("redis-server", "redis-benchmark", "redis-cli")
    if not KV_SERVER.exists():
        subprocess.run(["make", "-C", str(REPO / "unikernels"), "host"], check=True)
    result = run(args.quick)
    write_results(args.out, "kv", result, render(result))
    return 0


if __name__ == "__main__":
    if shutil.which("redis-benchmark") is None:
        print("bench.kv: redis-benchmark is missing (apt-get install redis-tools, or make deps)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
