"""`python -m bench.edge [--quick]`: what the edge rules cost per request, in ukproxy and in nginx, in one run.

Three rules, each measured against the same path without it, in ukproxy and in nginx doing the same:

- compression: gzip (level 1, both proxies' default) of a 16 KiB HTML page, against the page passed as it is
  (the client sends Accept-Encoding: gzip to both);
- a rate limit: nginx's limit_req (one zone keyed by client address, a rate far above the load, burst and
  nodelay), so what is measured is the shared-zone bookkeeping per request, never a refusal;
- a header rule: one request header set (proxy_set_header X-Client $remote_addr) and one response header
  added (add_header X-Frame-Options DENY), against a route without rules.

One ukproxy master and one nginx, each with as many workers as there are usable CPUs, hold a listener per
variant (a Host picks the header-rule routes), in front of one nginx backend (1 worker). Each variant gets
wrk -c32 for a few seconds; the CPU a proxy used over a run is read from /proc for its whole process
tree (bench/cpu.py), divided by the requests. Variants are interleaved and repeated, and each figure is
the median. The cost of a rule is its extra CPU µs per request and the ratio of req/s with and without
it. Writes bench/results/edge.md and edge.json; the load average and the CPU model come with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import nginx
from bench.clients import parse_wrk, run_parallel
from bench.cpu import per_request_us, tree_times
from bench.procs import Processes, free_port, install_signal_handlers
from bench.tools import cpu_model, machine, require
from bench.ukproxy_run import REPO, Ukproxy, head

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 32
RATE = "1000000r/s"  # far above what two cores can carry: the limit is consulted, never refuses


def page() -> bytes:
    """16 KiB of HTML that compresses as pages do (repeated markup, varied text)."""
    rows = []
    i = 0
    while sum(len(r) for r in rows) < 16 * 1024:
        rows.append(f'<tr><td class="id">{i}</td><td>item {i * 7919 % 1000}</td><td>{"abcdefgh"[i % 8] * (i % 13)}'
                    f"</td><td>{i * 31 % 97}.{i % 10}</td></tr>\n")
        i += 1
    return ("<!DOCTYPE html><html><head><title>bench</title></head><body><table>\n" + "".join(rows)
            + "</table></body></html>\n").encode()[:16 * 1024]


@dataclass(frozen=True)
class Variant:
    rule: str  # "compression", "rate limit", "header rule"
    with_rule: bool
    path: str
    host: str | None  # a Host header that picks a route, or None
    gzip: bool  # the client asks for gzip


VARIANTS = [
    Variant("compression", False, "/page.html", None, True),
    Variant("compression", True, "/page.html", None, True),
    Variant("rate limit", False, "/hello", None, False),
    Variant("rate limit", True, "/hello", None, False),
    Variant("header rule", False, "/hello", "plain.test", False),
    Variant("header rule", True, "/hello", "rules.test", False),
]


def listener_of(v: Variant) -> str:
    if v.rule == "compression" and v.with_rule:
        return "gzip"
    if v.rule == "rate limit" and v.with_rule:
        return "limit"
    return "plain"


def backend_conf(prefix: Path, port: int, root: Path) -> str:
    return nginx._head(prefix, 1, stream=False) + f"""http {{
{nginx._http_common(prefix)}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /hello {{ default_type text/plain; return 200 "{nginx.BODY}"; }}
        location / {{ root {root}; default_type text/html; }}
    }}
}}
"""


def nginx_proxy_conf(prefix: Path, workers: int, backend: int, ports: dict[str, int]) -> str:
    forward = nginx.forward()

    def server(port: int, extra: str, location_extra: str = "", name: str = "") -> str:
        names = f"        server_name {name};\n" if name else ""
        return f"""    server {{
        listen 127.0.0.1:{port}{" backlog=4096" if not name or name == "plain.test" else ""};
{names}{extra}        location / {{
{forward}{location_extra}        }}
    }}
"""
    rules = "            proxy_set_header X-Client $remote_addr;\n            add_header X-Frame-Options DENY;\n"
    servers = (server(ports["plain"], "", name="plain.test") + server(ports["plain"], "", rules, name="rules.test")
               + server(ports["gzip"], "        gzip on;\n        gzip_vary on;\n")
               + server(ports["limit"], "        limit_req zone=perip burst=1000 nodelay;\n"))
    return nginx._head(prefix, workers, stream=False) + f"""http {{
{nginx._http_common(prefix)}    upstream backends {{
        server 127.0.0.1:{backend};
        keepalive 32;
    }}
    limit_req_zone $binary_remote_addr zone=perip:1m rate={RATE};
{servers}}}
"""


def ukproxy_conf(workers: int, metrics: int, backend: int, ports: dict[str, int]) -> str:
    return head(workers, metrics) + f"""[[limit_req_zone]]
name = "perip"
key = "remote_addr"
rate = "{RATE}"
[[listen]]
address = "127.0.0.1:{ports["plain"]}"
protocol = "http"
upstream = "b"
backlog = 4096
[[listen]]
address = "127.0.0.1:{ports["gzip"]}"
protocol = "http"
upstream = "b"
backlog = 4096
gzip = true
[[listen]]
address = "127.0.0.1:{ports["limit"]}"
protocol = "http"
upstream = "b"
backlog = 4096
limit_req = {{zone = "perip", burst = 1000, nodelay = true}}
[[route]]
host = "plain.test"
upstream = "b"
[[route]]
host = "rules.test"
upstream = "b"
request_headers = {{ set = {{ X-Client = "$remote_addr" }} }}
response_headers = {{ add = {{ X-Frame-Options = "DENY" }} }}
[[upstream]]
name = "b"
servers = ["127.0.0.1:{backend}"]
keepalive = 32
"""


def wrk_argv(url: str, seconds: int, v: Variant) -> list[str]:
    headers = []
    if v.host:
        headers += ["-H", f"Host: {v.host}"]
    if v.gzip:
        headers += ["-H", "Accept-Encoding: gzip"]
    return ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout=5s", "--latency", *headers, url]


def measure(root_pid: int, url: str, seconds: int, v: Variant) -> dict[str, float]:
    before = tree_times(root_pid)
    out = run_parallel([wrk_argv(url, seconds, v)], seconds + 30)[0]
    after = tree_times(root_pid)
    result = parse_wrk(out, CONNECTIONS)
    if result.errors:
        raise RuntimeError(f"{url} ({v}): {result.errors} errors {result.error_detail}")
    return {"rps": result.rps, "requests": result.requests, "p99_ms": result.p99_ms,
            **per_request_us(before, after, result.requests)}


def check_variants(ports: dict[str, dict[str, int]]) -> None:
    """Before measuring: each proxy really does what the variant says (a figure for the wrong thing is worse
    than none)."""
    import gzip
    import http.client

    for proxy, their in ports.items():
        for v in VARIANTS:
            conn = http.client.HTTPConnection("127.0.0.1", their[listener_of(v)], timeout=10)
            headers = {"Host": v.host or "127.0.0.1"}
            if v.gzip:
                headers["Accept-Encoding"] = "gzip"
            conn.request("GET", v.path, headers=headers)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            compressed = r.getheader("Content-Encoding") == "gzip"
            if r.status != 200 or compressed != (v.rule == "compression" and v.with_rule):
                raise RuntimeError(f"{proxy} {v}: status {r.status}, Content-Encoding "
                                   f"{r.getheader('Content-Encoding')}")
            if compressed and gzip.decompress(data) != page():
                raise RuntimeError(f"{proxy} {v}: the gzip body is not the page")
            if v.rule == "header rule" and (r.getheader("X-Frame-Options") == "DENY") != v.with_rule:
                raise RuntimeError(f"{proxy} {v}: X-Frame-Options {r.getheader('X-Frame-Options')}")


def run(quick: bool, rules: list[str] | None = None) -> dict[str, object]:
    variants = [v for v in VARIANTS if rules is None or v.rule in rules]
    workers = len(os.sched_getaffinity(0))
    reps, seconds = (1, 2) if quick else (3, 3)
    with tempfile.TemporaryDirectory(prefix="ukbench-edge-") as tmp:
        raw = Path(tmp)
        procs = Processes(raw)
        try:
            root = raw / "www"
            root.mkdir()
            (root / "page.html").write_bytes(page())
            os.chmod(raw, 0o755)
            backend_port = free_port()
            nginx.start(procs, "backend", backend_conf(raw / "backend", backend_port, root), [backend_port])
            ports = {"ukproxy": {k: free_port() for k in ("plain", "gzip", "limit")},
                     "nginx": {k: free_port() for k in ("plain", "gzip", "limit")}}
            metrics = free_port()
            uk = Ukproxy(procs, "ukproxy", ukproxy_conf(workers, metrics, backend_port, ports["ukproxy"]), metrics)
            uk.start(list(ports["ukproxy"].values()))
            ng = nginx.start(procs, "nginx", nginx_proxy_conf(raw / "nginx", workers, backend_port, ports["nginx"]),
                             list(ports["nginx"].values()))
            roots = {"ukproxy": uk.proc.pid if uk.proc else 0, "nginx": ng.pid}
            _wait_ready(ports)
            check_variants(ports)
            samples: dict[tuple[str, str, bool], list[dict[str, float]]] = {}
            load_before = os.getloadavg()
            for _ in range(reps):
                for v in variants:
                    for proxy in ("ukproxy", "nginx"):
                        url = f"http://127.0.0.1:{ports[proxy][listener_of(v)]}{v.path}"
                        samples.setdefault((proxy, v.rule, v.with_rule), []).append(
                            measure(roots[proxy], url, seconds, v))
            load_after = os.getloadavg()
        finally:
            procs.stop_all()
    figures = {key: {name: statistics.median(s[name] for s in runs) for name in runs[0]}
               for key, runs in samples.items()}
    records = []
    for rule in dict.fromkeys(v.rule for v in variants):
        row: dict[str, object] = {"rule": rule}
        for proxy in ("ukproxy", "nginx"):
            off, on = figures[(proxy, rule, False)], figures[(proxy, rule, True)]
            row[proxy] = {"without": off, "with": on, "extra_cpu_us": round(on["cpu_us"] - off["cpu_us"], 1),
                          "cpu_ratio": round(on["cpu_us"] / off["cpu_us"], 3) if off["cpu_us"] else None,
                          "rps_ratio": round(on["rps"] / off["rps"], 3) if off["rps"] else None}
        uk_on, ng_on = row["ukproxy"]["with"], row["nginx"]["with"]  # type: ignore[index]
        row["ukproxy_over_nginx_cpu"] = round(uk_on["cpu_us"] / ng_on["cpu_us"], 2) if ng_on["cpu_us"] else None
        row["ukproxy_over_nginx_rps"] = round(uk_on["rps"] / ng_on["rps"], 3) if ng_on["rps"] else None
        records.append(row)
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick, "repetitions": reps,
            "seconds": seconds, "connections": CONNECTIONS, "workers": workers, "cpu": cpu_model(),
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
            "request_path": request_path(), "machine": machine(), "records": records}


def request_path() -> str:
    """Whether the ukproxy measured ran compiled (ukproxy/compiled.py), asked as the master would find it."""
    found = subprocess.run([sys.executable, "-c", "import ukproxy.compiled as c; print(c.MODE)"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    return found.stdout.strip() or f"unknown ({found.stderr.strip()[-200:]})"


def _wait_ready(ports: dict[str, dict[str, int]]) -> None:
    """Every listener answers (the master binds before its workers run)."""
    import http.client

    deadline = time.monotonic() + 60
    for their in ports.values():
        for port in their.values():
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/hello")
                    status = conn.getresponse().status
                    conn.close()
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} never answered 200")
                time.sleep(0.1)


def render(result: dict[str, object]) -> str:
    lines = [
        "# The edge rules' cost per request: ukproxy and nginx, each with and without the rule", "",
        f"{result['started']}, {result['cpu']}, {result['workers']} workers each, wrk -c{result['connections']} "
        f"{result['seconds']} s per run, median of {result['repetitions']} interleaved runs; load average "
        f"{result['loadavg_before']} before, {result['loadavg_after']} after. ukproxy's request path: "
        f"{result['request_path']}.", "",
        "CPU is the proxy's whole process tree (from /proc), per request; the backend is not counted.", "",
        "| rule | proxy | µs/req without | µs/req with | extra µs/req | CPU with/without | req/s without | "
        "req/s with | req/s with/without |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["records"]:  # type: ignore[attr-defined]
        for proxy in ("ukproxy", "nginx"):
            p = r[proxy]
            lines.append(f"| {r['rule']} | {proxy} | {p['without']['cpu_us']:.1f} | {p['with']['cpu_us']:.1f} | "
                         f"{p['extra_cpu_us']:+.1f} | {p['cpu_ratio']:.2f}x | {p['without']['rps']:,.0f} | "
                         f"{p['with']['rps']:,.0f} | {p['rps_ratio']:.2f}x |")
    lines += ["", "| rule | ukproxy / nginx, CPU per request with the rule | ukproxy / nginx, req/s with the rule |",
              "|---|---:|---:|"]
    for r in result["records"]:  # type: ignore[attr-defined]
        lines.append(f"| {r['rule']} | {r['ukproxy_over_nginx_cpu']}x | {r['ukproxy_over_nginx_rps']}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition of 2 s runs")
    ap.add_argument("--rule", action="append", choices=sorted({v.rule for v in VARIANTS}),
                    help="measure only this rule (again for more)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    require("nginx", "wrk")
    install_signal_handlers()
    result = run(args.quick, args.rule)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge.json").write_text(json.dumps(result, indent=1) + "\n")
    text = render(result)
    (args.out / "edge.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
