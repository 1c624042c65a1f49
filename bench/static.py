"""The static service against the same files embedded in httpd and against nginx serving the folder natively.

    .venv/bin/python -m bench.static [--quick] [--json PATH] [--md PATH]

Root needed. In one throwaway namespace: a `static` VM sharing a folder over virtio-9p (read-only), an
`httpd` VM serving the same bytes from its image (/static/small.txt, 4 KiB, and /static/large.txt, 64 KiB;
the share holds copies of exactly those files), and nginx serving the folder natively. wrk runs inside the
namespace straight at each server (no proxy in between: this compares the services), keep-alive, at a few
connection counts. One VM is compared with nginx `worker_processes 1`; two VMs (one wrk at each, req/s
summed) with `worker_processes 2` (two wrk at it). Each figure is the median of interleaved repetitions.
The one-VM group also runs a static VM booted with `open_file_cache_valid_ms=0`: the open-file cache off,
every request opening the file over 9P afresh, so the cache's gain is a ratio within the same run.

Also: time from QEMU's exec to the guest's `ready` line, static.elf with its share against httpd.elf
without one, boots interleaved. Results go to bench/results/static.md and static.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.clients import ClientFailed, RunResult, parse_wrk, run_parallel, wrk_argv
from bench.tools import machine
from bench.unikernel_harness import QEMU, REPO, UNIKERNELS, Lab, Vm, build_image, image_for, is_root, qemu_argv
from ukproxy.vm.share import fsdev_args

EMBED = UNIKERNELS / "services" / "httpd" / "embed"
FILES = {"4 KiB": "small.txt", "64 KiB": "large.txt"}
RESULTS = REPO / "bench" / "results"
NGINX_PORT = 8080


@dataclass
class Target:
    """Servers that together make one figure: one wrk per address, req/s summed."""

    name: str
    workers: int
    urls: Callable[[str], list[str]]  # file name -> one URL per wrk


def share_folder(root: Path) -> Path:
    folder = root / "share"
    folder.mkdir()
    for name in FILES.values():
        shutil.copyfile(EMBED / name, folder / name)
    root.chmod(0o755)
    folder.chmod(0o755)
    return folder


def boot_static(lab: Lab, name: str, folder: Path, extra: str = "") -> Vm:
    """A static VM (Lab.boot has no share) at the lab's next address, sharing `folder` read-only."""
    host = lab._next_host
    lab._next_host += 1
    ip = lab.netns.address(host)
    tap = lab.netns.add_tap()
    mac = f"52:54:00:79:{lab.netns.subnet:02x}:{host:02x}"
    append = f"ip={ip}/24 gw={lab.netns.gateway} port=80 name={name} {extra}".strip()
    argv = lab.netns.cmd(*qemu_argv(append=append, netdev=f"tap,id=n0,ifname={tap},script=no,downscript=no",
                                    mac=mac, image=image_for("static")),
                         *fsdev_args("f0", str(folder), "share", writable=False))
    vm = Vm(argv=argv, workdir=lab.workdir, name=name, ip=ip, mac=mac, port=80)
    lab.vms.append(vm)
    vm.start()
    return vm


def nginx_conf(prefix: Path, folder: Path, listen: str, workers: int) -> str:
    return f"""worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type text/plain;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {listen} backlog=4096;
        root {folder};
    }}
}}
"""


def start_nginx(lab: Lab, workdir: Path, folder: Path, workers: int) -> subprocess.Popen[bytes]:
    prefix = workdir / f"nginx{workers}"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, folder, f"{lab.netns.gateway}:{NGINX_PORT}", workers))
    proc = subprocess.Popen(lab.netns.cmd("nginx", "-p", str(prefix), "-c", str(conf)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_serving(lab: Lab, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = lab.netns.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url)
        if r.stdout.strip() == "200":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} does not answer 200: {r.stdout} {r.stderr}")
        time.sleep(0.2)


def same_bytes(lab: Lab, url: str, expected: bytes) -> None:
    r = subprocess.run(lab.netns.cmd("curl", "-sS", "--max-time", "10", url), capture_output=True, timeout=30)
    if r.stdout != expected:
        raise RuntimeError(f"{url} served {len(r.stdout)} bytes that differ from the {len(expected)} expected")


def measure(lab: Lab, urls: list[str], connections: int, seconds: float) -> RunResult:
    """One wrk per URL at once, each with `connections`; their req/s, requests and errors summed."""
    outs = run_parallel([lab.netns.cmd(*wrk_argv(u, connections, seconds)) for u in urls], seconds + 30)
    runs = [parse_wrk(o, connections) for o in outs]
    first = runs[0]
    first.rps = sum(r.rps for r in runs)
    first.requests = sum(r.requests for r in runs)
    first.errors = sum(r.errors for r in runs)
    first.connections = connections * len(urls)
    return first


def throughput(lab: Lab, targets: list[Target], conns: list[int], seconds: float, reps: int) -> list[dict]:
    """Every (target, file, connections) measured `reps` times, round-robin so drift hits all alike."""
    cells = [(t, size, c) for t in targets for size in FILES for c in conns]
    samples: dict[tuple[str, str, int], list[RunResult]] = {(t.name, s, c): [] for t, s, c in cells}
    for rep in range(reps):
        for t, size, c in cells:
            per = c if t.workers == 1 else max(1, c // t.workers)
            r = measure(lab, t.urls(FILES[size]), per, seconds)
            samples[(t.name, size, c)].append(r)
            print(f"  rep {rep + 1}/{reps} {t.name:<22} {size:>6} c={c:<4} {r.rps:10.0f} req/s"
                  f"  p99 {r.p99_ms:.1f} ms  errors {r.errors}", flush=True)
    out = []
    for (name, size, c), runs in samples.items():
        out.append({"target": name, "file": size, "connections": c,
                    "rps": statistics.median(r.rps for r in runs),
                    "p99_ms": statistics.median(r.p99_ms for r in runs),
                    "errors": sum(r.errors for r in runs), "runs": [round(r.rps) for r in runs]})
    return out


def boot_times(workdir: Path, folder: Path, boots: int) -> dict[str, dict[str, float]]:
    """ms from QEMU's exec to `ready`: static.elf with its share, httpd.elf without, interleaved."""
    got: dict[str, list[float]] = {"static.elf + 9P share": [], "httpd.elf, no share": []}
    (workdir / "boots").mkdir()
    lab = Lab(workdir / "boots", prefix="ukb-")
    try:
        for i in range(boots):
            for kind in got:
                vm = boot_static(lab, f"b{i}", folder) if kind.startswith("static") else \
                    lab.boot(f"b{i}", wait=False)
                vm.wait_ready(30)
                assert vm.ready_at is not None
                got[kind].append((vm.ready_at - vm.started_at) * 1000)
                vm.stop()
    finally:
        lab.close()
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "boots": len(v)}
            for k, v in got.items()}


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# static: a 9P share against embedded files and native nginx",
        "",
        f"CPU: {m['cpu_model']} ({m['usable_cpus']} usable CPUs; load average at start "
        f"{doc['load_at_start']}). QEMU {m['qemu']} under TCG, nginx {m['nginx']}, wrk {m['wrk']}.",
        f"wrk keep-alive inside the namespace, straight at the servers (no proxy), {doc['seconds']} s per run, "
        f"median of {doc['reps']} interleaved runs. Command: `{doc['command']}`.",
        "With 2 workers, two wrk run at once (one at each VM, or both at nginx) and the connections are "
        "their total, split evenly; req/s is their sum.",
        "",
        "| target | workers | file | connections | req/s (median) | p99 ms | errors | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["throughput"]:
        lines.append(f"| {r['target']} | {r['workers']} | {r['file']} | {r['connections']} | {r['rps']:.0f} | "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {', '.join(map(str, r['runs']))} |")
    lines += ["", "Boot to `ready` (ms from QEMU's exec, interleaved):", "",
              "| image | median | min | max | boots |", "|---|---|---|---|---|"]
    for k, v in doc["boot"].items():
        lines.append(f"| {k} | {v['median_ms']:.1f} | {v['min_ms']:.1f} | {v['max_ms']:.1f} | {v['boots']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions and boots")
    ap.add_argument("--json", type=Path, default=RESULTS / "static.json")
    ap.add_argument("--md", type=Path, default=RESULTS / "static.md")
    args = ap.parse_args()
    if not is_root():
        print("bench.static needs root (network namespace, TAPs)")
        return 2
    for tool in (QEMU, "nginx", "wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"bench.static needs {tool}")
            return 2
    seconds, reps, boots = (3, 3, 10) if args.quick else (10, 5, 30)
    conns = [1, 32] if args.quick else [1, 32, 128]
    build_image("httpd", "static")
    info = machine()
    print(f"CPU: {info['cpu_model']}", flush=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmp:
        workdir = Path(tmp)
        folder = share_folder(workdir)
        lab = Lab(workdir, prefix="ukb-")
        nginx: list[subprocess.Popen[bytes]] = []
        try:
            static = [boot_static(lab, f"static{i}", folder) for i in range(2)]
            uncached = boot_static(lab, "static-nocache", folder, "open_file_cache_valid_ms=0")
            embedded = [lab.boot(f"httpd{i}") for i in range(2)]
            for vm in [*static, uncached]:
                vm.wait_ready(30)
            gw = lab.netns.gateway
            for size, name in FILES.items():
                body = (EMBED / name).read_bytes()
                for vm in [*static, uncached]:
                    same_bytes(lab, f"http://{vm.ip}/{name}", body)
                for vm in embedded:
                    same_bytes(lab, f"http://{vm.ip}/static/{name}", body)
                print(f"  {size}: the share, the images and the folder serve the same {len(body)} bytes", flush=True)
            targets = [
                Target("static VM, 9P share", 1, lambda f: [f"http://{static[0].ip}/{f}"]),
                Target("static VM, 9P, cache off", 1, lambda f: [f"http://{uncached.ip}/{f}"]),
                Target("httpd VM, embedded", 1, lambda f: [f"http://{embedded[0].ip}/static/{f}"]),
                Target("nginx, native", 1, lambda f: [f"http://{gw}:{NGINX_PORT}/{f}"]),
            ]
            results = []
            for workers, group in ((1, targets), (2, [
                Target("2 static VMs, 9P share", 2, lambda f: [f"http://{vm.ip}/{f}" for vm in static]),
                Target("2 httpd VMs, embedded", 2, lambda f: [f"http://{vm.ip}/static/{f}" for vm in embedded]),
                Target("nginx, native", 2, lambda f: [f"http://{gw}:{NGINX_PORT}/{f}"] * 2),
            ])):
                proc = start_nginx(lab, workdir, folder, workers)
                nginx.append(proc)
                wait_serving(lab, f"http://{gw}:{NGINX_PORT}/small.txt")
                same_bytes(lab, f"http://{gw}:{NGINX_PORT}/large.txt", (EMBED / "large.txt").read_bytes())
                print(f"{workers} worker(s) each:", flush=True)
                group_conns = conns if workers == 1 else [c for c in conns if c > 1]
                for r in throughput(lab, group, group_conns, seconds, reps):
                    results.append({**r, "workers": workers})
                stop(proc)
        except ClientFailed as e:
            print(f"a client failed: {e}")
            return 1
        finally:
            for proc in nginx:
                stop(proc)
            lab.close()
        print("boot to ready:", flush=True)
        boot = boot_times(workdir, folder, boots)
        for k, v in boot.items():
            print(f"  {k:<24} median {v['median_ms']:.1f} ms (min {v['min_ms']:.1f}, max {v['max_ms']:.1f})")

    doc = {"machine": info, "load_at_start": load, "seconds": seconds, "reps": reps,
           "command": "python -m bench.static" + (" --quick" if args.quick else ""),
           "mode": "straight at the servers in a namespace, no proxy", "throughput": results, "boot": boot}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    args.md.write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
