"""`python -m bench.tls [--seconds S] [--rounds N]`: TLS termination in ukproxy against nginx, in one run.

Both proxies terminate TLS with the same certificates, an ECDSA P-256 one and an RSA 2048 one (made here
with the openssl CLI, each on its own listener), with the same worker count (the usable CPUs), in front
of the same nginx `return 200` backend (1 worker) over keep-alive upstream connections. For each
certificate:

- new TLS connections per second: ab over https without -k, so each request is a new connection with a
  full handshake (ab never resumes) and Connection: close; TLS 1.3, ab's default;
- keep-alive requests per second over TLS: wrk -c32 over https.

With --python-too, the same ukproxy also serves each certificate on a listener with ssl_engine = "python"
(uvloop's SSL layer instead of the C engine, ukproxy/native/tls_transport.c): the A/B of the two TLS paths
in one run, same process, same workers, interleaved with the others.

Each figure is one client run per proxy, the proxies taking turns (with --rounds N, the median of N);
the CPU a proxy's process tree used over a run is read from /proc, per connection or per request, since
on a shared 2-core machine the ratios of rates move with the load while CPU per unit moves less.
Writes bench/results/tls.md and tls.json with the load average and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import nginx
from bench.clients import RunResult, ab_argv, parse_ab, parse_wrk, run_parallel, wrk_argv
from bench.cpu import per_request_us, tree_times
from bench.procs import Processes, free_port, install_signal_handlers
from bench.tools import machine, require
from bench.ukproxy_run import Ukproxy, head

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("ecdsa", "rsa")
PROXIES = ("nginx", "ukproxy")
PYTHON_PATH = "ukproxy-python"  # ukproxy's listeners with ssl_engine = "python" (--python-too)
CONNECTIONS = 32  # wrk's keep-alive connections
AB_CONCURRENCY = 16  # ab's connections in flight, each a new handshake


def make_certificates(folder: Path) -> dict[str, tuple[Path, Path]]:
    """A self-signed certificate per kind: ECDSA P-256 and RSA 2048, for CN localhost."""
    out = {}
    for kind, key_args in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                           ("rsa", ["-newkey", "rsa:2048"])):
        cert, key = folder / f"{kind}.pem", folder / f"{kind}.key"
        subprocess.run(["openssl", "req", "-x509", *key_args, "-nodes", "-keyout", str(key), "-out", str(cert),
                        "-days", "30", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True, timeout=60)
        out[kind] = (cert, key)
    return out


def nginx_tls_conf(prefix: Path, workers: int, backend: str, listeners: dict[str, int],
                   certs: dict[str, tuple[Path, Path]]) -> str:
    """nginx terminating TLS (TLS 1.2 and 1.3 as ukproxy's default; otherwise nginx's defaults: session
    tickets on, two per TLS 1.3 handshake, no shared session cache) and proxying with keep-alive and the
    forwarding headers ukproxy sends. ssl_protocols is spelled out: nginx before 1.23.4 leaves TLS 1.3 out
    of its default, and a TLS 1.2 handshake costs it a fifth less CPU than a TLS 1.3 one."""
    servers = "".join(f"""    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {certs[kind][0]};
        ssl_certificate_key {certs[kind][1]};
        location / {{
{nginx.forward()}        }}
    }}
""" for kind, port in listeners.items())
    return nginx._head(prefix, workers, stream=False) + f"""http {{
{nginx._http_common(prefix)}    upstream backends {{
        server {backend};
        keepalive 32;
    }}
{servers}}}
"""


def ukproxy_tls_conf(workers: int, metrics_port: int, backend: str, listeners: dict[str, int],
                     certs: dict[str, tuple[Path, Path]], python_listeners: dict[str, int] | None = None) -> str:
    out = head(workers, metrics_port)
    for kind, port, engine in [*((k, p, "native") for k, p in listeners.items()),
                               *((k, p, "python") for k, p in (python_listeners or {}).items())]:
        out += f"""[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "b"
backlog = 4096
ssl = true
ssl_certificate = "{certs[kind][0]}"
ssl_certificate_key = "{certs[kind][1]}"
ssl_engine = "{engine}"
"""
    return out + f'[[upstream]]\nname = "b"\nservers = ["{backend}"]\n'


@dataclass
class Figure:
    proxy: str
    kind: str
    measure: str  # "handshakes" or "keepalive"
    rate: float  # connections/s or requests/s
    errors: int
    cpu_us: float  # per connection or per request, the proxy's process tree


def _run(measure: str, url: str, seconds: float, root: int) -> tuple[RunResult, float]:
    before = tree_times(root)
    if measure == "handshakes":
        argv = ab_argv(url, AB_CONCURRENCY, 10_000_000, keepalive=False, time_limit=seconds)
        out = run_parallel([argv], seconds + 30)[0]
        result = parse_ab(out, AB_CONCURRENCY, False, 10_000_000)
    else:
        out = run_parallel([wrk_argv(url, CONNECTIONS, seconds)], seconds + 30)[0]
        result = parse_wrk(out, CONNECTIONS)
    after = tree_times(root)
    return result, per_request_us(before, after, result.requests)["cpu_us"]


def measure(seconds: float, rounds: int, out_dir: Path, python_too: bool = False) -> dict:
    require("nginx", "ab", "wrk", "openssl")
    workers = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    procs = Processes(scratch)
    install_signal_handlers()
    try:
        certs = make_certificates(scratch)
        backend_port = free_port()
        nginx.start(procs, "backend-nginx", nginx.backend_conf(scratch / "backend-nginx", 1, backend_port),
                    [backend_port])
        backend = f"127.0.0.1:{backend_port}"
        ngx_ports = {kind: free_port() for kind in KINDS}
        ngx = nginx.start(procs, "tls-nginx", nginx_tls_conf(scratch / "tls-nginx", workers, backend, ngx_ports,
                                                                certs), list(ngx_ports.values()))
        uk_ports = {kind: free_port() for kind in KINDS}
        py_ports = {kind: free_port() for kind in KINDS} if python_too else {}
        metrics = free_port()
        uk = Ukproxy(procs, "tls-ukproxy", ukproxy_tls_conf(workers, metrics, backend, uk_ports, certs, py_ports),
                     metrics)
        uk.start([*uk_ports.values(), *py_ports.values(), metrics])
        assert uk.proc is not None
        roots = {"nginx": ngx.pid, "ukproxy": uk.proc.pid, PYTHON_PATH: uk.proc.pid}
        ports = {"nginx": ngx_ports, "ukproxy": uk_ports, PYTHON_PATH: py_ports}
        proxies = PROXIES + ((PYTHON_PATH,) if python_too else ())
        uk.wait_ready(workers)  # their imports done before the first run
        samples: dict[tuple[str, str, str], list[Figure]] = {}
        for _ in range(rounds):
            for kind in KINDS:
                for what in ("handshakes", "keepalive"):
                    for proxy in proxies:
                        url = f"https://localhost:{ports[proxy][kind]}/"
                        result, cpu = _run(what, url, seconds, roots[proxy])
                        rate = result.rps
                        fig = Figure(proxy, kind, what, rate, result.errors, cpu)
                        samples.setdefault((proxy, kind, what), []).append(fig)
                        print(f"{proxy:14} {kind:6} {what:10} {rate:9.0f}/s  errors {result.errors}  "
                              f"{cpu:7.1f} µs CPU each", file=sys.stderr)
        load = os.getloadavg()
    finally:
        procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)  # certificates, configs and logs of this run only
    rows = []
    for kind in KINDS:
        for what in ("handshakes", "keepalive"):
            med = {p: statistics.median(f.rate for f in samples[(p, kind, what)]) for p in proxies}
            cpu = {p: statistics.median(f.cpu_us for f in samples[(p, kind, what)]) for p in proxies}
            errors = {p: sum(f.errors for f in samples[(p, kind, what)]) for p in proxies}
            row = {"certificate": kind, "measure": what, "nginx": round(med["nginx"]),
                   "ukproxy": round(med["ukproxy"]), "ratio": round(med["ukproxy"] / med["nginx"], 3),
                   "nginx_cpu_us": round(cpu["nginx"], 1), "ukproxy_cpu_us": round(cpu["ukproxy"], 1),
                   "errors": errors}
            if python_too:  # the same ukproxy on uvloop's SSL layer
                row |= {"python_path": round(med[PYTHON_PATH]), "python_path_cpu_us": round(cpu[PYTHON_PATH], 1)}
            rows.append(row)
    from ukproxy import compiled

    result = {"machine": machine(), "load_average": [round(x, 2) for x in load], "workers": workers,
              "request_path": compiled.MODE, "tls_engine": tls_engine(),
              "seconds": seconds, "rounds": rounds, "rows": rows,
              "targets": {"handshakes": 0.9, "keepalive": 0.8}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tls.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "tls.md").write_text(report(result))
    return result


def tls_engine() -> str:
    """Which TLS path ukproxy's listeners take by default: the C engine when it is built and allowed."""
    from ukproxy import native

    return "C engine (ukproxy/native/tls_transport.c)" if native.load("tls_transport") else "uvloop's SSL layer"


def report(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# TLS termination: ukproxy against nginx",
        "",
        f"{m['cpu_model']}, {result['workers']} workers each, load average {result['load_average']} at the end; "
        f"{result['seconds']:g} s per client run, median of {result['rounds']}; ukproxy's request path: "
        f"{result['request_path']}; its TLS: {result.get('tls_engine', '?')}.",
        "handshakes: new TLS 1.3 connections per second (ab -c16 without keep-alive, a full handshake each); "
        "keepalive: requests per second over TLS (wrk -c32). CPU: µs of the proxy's processes per connection "
        "or per request; CPU ratio: nginx's over ukproxy's (on a shared machine the steadier figure).",
        "",
        "| certificate | measure | nginx /s | ukproxy /s | ratio | target | nginx CPU µs | ukproxy CPU µs "
        "| CPU ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        target = result["targets"][r["measure"]]
        lines.append(f"| {r['certificate']} | {r['measure']} | {r['nginx']} | {r['ukproxy']} | {r['ratio']:.2f} | "
                     f"{target} | {r['nginx_cpu_us']} | {r['ukproxy_cpu_us']} | "
                     f"{r['nginx_cpu_us'] / r['ukproxy_cpu_us']:.2f} |")
    if any("python_path" in r for r in result["rows"]):
        lines += ["", "The same ukproxy, same run, on listeners with ssl_engine = \"python\" (uvloop's SSL layer):", "",
                  "| certificate | measure | /s | ratio to nginx | CPU µs | CPU ratio to nginx "
                  "| C engine's CPU over it |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in result["rows"]:
            lines.append(f"| {r['certificate']} | {r['measure']} | {r['python_path']} | "
                         f"{r['python_path'] / r['nginx']:.2f} | {r['python_path_cpu_us']} | "
                         f"{r['nginx_cpu_us'] / r['python_path_cpu_us']:.2f} | "
                         f"{r['ukproxy_cpu_us'] / r['python_path_cpu_us']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each client run")
    ap.add_argument("--rounds", type=int, default=1, help="runs per figure (the median is kept)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--python-too", action="store_true",
                    help="also measure ukproxy's uvloop SSL path (ssl_engine = \"python\"), interleaved")
    args = ap.parse_args(argv)
    result = measure(args.seconds, args.rounds, args.out, args.python_too)
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
