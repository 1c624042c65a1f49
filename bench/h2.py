"""`python -m bench.h2 [--seconds S] [--profile]`: HTTP/2 for clients in ukproxy against nginx, in one run.

Both proxies speak HTTP/2 to h2load (`-c 32 -m 10`: 32 connections, 10 streams in flight on each) and
HTTP/1.1 with keep-alive to the same nginx `return 200` backend (1 worker), with the same worker count (the
usable CPUs): over TLS (ALPN h2, one ECDSA P-256 certificate, TLS 1.3) and in the clear with prior
knowledge (h2c), which both support. nginx 1.22 (Debian 12) spells `http2 on` as `listen ... http2`.
One h2load run per proxy and transport, the proxies taking turns; the CPU each proxy's process tree used
is read from /proc and given per request, since on a shared 2-core machine ratios of rates move with the
load more than CPU per request does. With --profile, py-spy then samples one ukproxy worker under the same
load (h2c) and the top frames by own time are written beside the figures. Writes bench/results/h2.md and
h2.json with the load average and the CPU model.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench import nginx
from bench.cpu import per_request_us, tree_times
from bench.procs import Processes, free_port, install_signal_handlers
from bench.tls import make_certificates
from bench.tools import machine, require
from bench.ukproxy_run import Ukproxy, head

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 32
STREAMS = 10
# Idle upstream connections each worker keeps, both proxies: 320 streams in flight would otherwise open and
# close upstream connections past nginx's usual 32, and the figures would measure that churn.
KEEPALIVE = 256
TRANSPORTS = ("tls", "h2c")


def nginx_h2_conf(prefix: Path, workers: int, backend: str, ports: dict[str, int], cert: tuple[Path, Path]) -> str:
    location = f"        location / {{\n{nginx.forward(via='2 nginx')}        }}\n"
    return nginx._head(prefix, workers, stream=False) + f"""http {{
{nginx._http_common(prefix)}    http2_max_concurrent_streams 128;
    upstream backends {{
        server {backend};
        keepalive {KEEPALIVE};
    }}
    server {{
        listen 127.0.0.1:{ports["tls"]} ssl http2 backlog=4096;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
{location}    }}
    server {{
        listen 127.0.0.1:{ports["h2c"]} http2 backlog=4096;
{location}    }}
}}
"""


def ukproxy_h2_conf(workers: int, metrics_port: int, backend: str, ports: dict[str, int],
                    cert: tuple[Path, Path]) -> str:
    return head(workers, metrics_port) + f"""[[listen]]
address = "127.0.0.1:{ports["tls"]}"
protocol = "http"
upstream = "b"
backlog = 4096
http2 = true
ssl = true
ssl_certificate = "{cert[0]}"
ssl_certificate_key = "{cert[1]}"
[[listen]]
address = "127.0.0.1:{ports["h2c"]}"
protocol = "http"
upstream = "b"
backlog = 4096
http2 = true
[[upstream]]
name = "b"
servers = ["{backend}"]
keepalive = {KEEPALIVE}
"""


def h2load(url: str, seconds: float) -> dict:
    argv = ["h2load", "-c", str(CONNECTIONS), "-m", str(STREAMS), "-t", "1", "-D", f"{seconds:g}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rate = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    if done is None or rate is None:
        raise RuntimeError(f"h2load said:\n{out}")
    return {"requests": int(done[4]), "failed": int(done[5]), "rps": float(rate[2]),
            "protocol": protocol[1] if protocol else "?"}


def measure(seconds: float, profile: bool, out_dir: Path) -> dict:
    require("nginx", "h2load", "openssl")
    workers = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="bench-h2-"))
    procs = Processes(scratch)
    install_signal_handlers()
    rows = []
    profile_top: list[tuple[str, float]] = []
    library_share = 0.0
    try:
        cert = make_certificates(scratch)["ecdsa"]
        backend_port = free_port()
        nginx.start(procs, "backend-nginx", nginx.backend_conf(scratch / "backend-nginx", 1, backend_port),
                    [backend_port])
        backend = f"127.0.0.1:{backend_port}"
        ngx_ports = {t: free_port() for t in TRANSPORTS}
        ngx = nginx.start(procs, "h2-nginx", nginx_h2_conf(scratch / "h2-nginx", workers, backend, ngx_ports, cert),
                          list(ngx_ports.values()))
        uk_ports = {t: free_port() for t in TRANSPORTS}
        metrics = free_port()
        uk = Ukproxy(procs, "h2-ukproxy", ukproxy_h2_conf(workers, metrics, backend, uk_ports, cert), metrics)
        uk.start([*uk_ports.values(), metrics])
        assert uk.proc is not None
        roots = {"nginx": ngx.pid, "ukproxy": uk.proc.pid}
        ports = {"nginx": ngx_ports, "ukproxy": uk_ports}
        uk.wait_ready(workers)  # their imports done before the first run
        for transport in TRANSPORTS:
            row: dict = {"transport": transport}
            for proxy in ("nginx", "ukproxy"):
                scheme = "https" if transport == "tls" else "http"
                url = f"{scheme}://localhost:{ports[proxy][transport]}/"
                before = tree_times(roots[proxy])
                result = h2load(url, seconds)
                cpu = per_request_us(before, tree_times(roots[proxy]), result["requests"])["cpu_us"]
                row[proxy] = {**result, "cpu_us": round(cpu, 1)}
                print(f"{proxy:8} {transport:4} {result['rps']:9.0f} req/s  failed {result['failed']}  "
                      f"{cpu:6.1f} µs CPU/req  ({result['protocol']})", file=sys.stderr)
            row["ratio"] = round(row["ukproxy"]["rps"] / row["nginx"]["rps"], 3)
            row["cpu_ratio"] = round(row["ukproxy"]["cpu_us"] / row["nginx"]["cpu_us"], 2)
            rows.append(row)
        load = os.getloadavg()
        if profile:
            profile_top, library_share = _profile(uk.proc.pid, f"http://localhost:{uk_ports['h2c']}/", seconds)
    finally:
        procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)  # certificates, configs and logs of this run
    from ukproxy import compiled

    result = {"machine": machine(), "load_average": [round(x, 2) for x in load], "workers": workers,
              "seconds": seconds, "connections": CONNECTIONS, "streams": STREAMS, "rows": rows,
              "request_path": compiled.MODE, "profile_top_own": profile_top, "h2_library_share": library_share,
              "upstream_keepalive": KEEPALIVE}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "h2.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "h2.md").write_text(report(result))
    return result


_LIBRARY = re.compile(r"\((?:h2|hpack|hyperframe)/")  # a frame of the h2 library or its HPACK and framing parts


def _profile(master: int, url: str, seconds: float) -> tuple[list[tuple[str, float]], float]:
    """py-spy on one worker while h2load runs: the top frames by own time, as shares of the samples, and the
    share of samples inside the h2 library (any of its frames on the stack)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workers = psutil.Process(master).children()
    out = tempfile.mktemp(suffix=".txt")
    record = subprocess.Popen([spy, "record", "-p", str(workers[0].pid), "-d", f"{seconds:g}", "-r", "200",
                               "-f", "raw", "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    h2load(url, seconds)
    record.wait(seconds + 60)
    own: collections.Counter[str] = collections.Counter()
    total = library = 0
    for line in Path(out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            own[stack.split(";")[-1]] += int(count)
            total += int(count)
            if _LIBRARY.search(stack):
                library += int(count)
    os.unlink(out)
    if not total:
        return [], 0.0
    return [(frame, round(n / total, 3)) for frame, n in own.most_common(25)], round(library / total, 3)


def report(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# HTTP/2 for clients: ukproxy against nginx",
        "",
        f"{m['cpu_model']}, {result['workers']} workers each, load average {result['load_average']} at the end; "
        f"h2load -c{result['connections']} -m{result['streams']} -t1 for {result['seconds']:g} s per run, one run "
        f"each; upstreams HTTP/1.1 keep-alive ({result['upstream_keepalive']} idle per worker) to one nginx "
        f"`return 200` worker. ukproxy's request path: "
        f"{result['request_path']}.",
        "",
        "| transport | nginx req/s | ukproxy req/s | ratio | nginx µs CPU/req | ukproxy µs CPU/req | CPU ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        n, u = row["nginx"], row["ukproxy"]
        lines.append(f"| {row['transport']} ({u['protocol']}) | {n['rps']:.0f} | {u['rps']:.0f} | {row['ratio']} | "
                     f"{n['cpu_us']} | {u['cpu_us']} | {row['cpu_ratio']} |")
    if result["profile_top_own"]:
        share = result["h2_library_share"]
        lines += ["", f"ukproxy worker under h2c load, py-spy: {share:.0%} of the samples are inside "
                  "the h2 library (frames, HPACK, stream states); top frames by own time (share of samples; the "
                  "compiled request path and uvloop count as their Python callers' own time):", ""]
        lines += [f"- {share:.1%} {frame}" for frame, share in result["profile_top_own"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.h2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true", help="py-spy one ukproxy worker under h2c load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    print(report(measure(args.seconds, args.profile, args.out)))


if __name__ == "__main__":
    main()
