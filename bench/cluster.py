"""`python -m bench.cluster [--vm]`: the cluster's figures (docs/cluster.md), from one run on this machine.

- push: from the write of a new shared config into etcd to every node running it (its /status says the
  revision), three nodes on static nginx backends, several pushes;
- writes: etcd's own count of puts and transactions over a quiet window (every node registered);
- kill: from a node's SIGKILL to its record gone from etcd (lease_ttl 3 s);
- cost: req/s of one node with [cluster] against the same node without it, alternated (wrk);
- spill (--vm, root): latency of a request served by the node's own VM, and of one spilled to a peer
  (two nodes, each with one httpd VM in a backend namespace of its own).

Everything it starts is stopped at the end (bench.procs), the etcd data directory removed with the run's.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench import nginx, tools
from bench.clients import wrk
from bench.procs import Processes, Started, free_port, wait_bound
from bench.ukproxy_run import IMAGE, REPO

CLUSTER = "bench"


def _log(msg: str) -> None:
    print(f"  cluster {msg}", file=sys.stderr, flush=True)


def _wait(probe: Any, what: str, timeout: float = 60.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout}s for {what}")
        time.sleep(interval)


class Etcd:
    def __init__(self, procs: Processes, home: Path) -> None:
        self.port, peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.proc = procs.start("etcd", ["etcd", "--name", "b", "--data-dir", str(home / "etcd-data"),
                                         "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                                         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                                         "--initial-cluster", f"b={peer_url}"])
        wait_bound(self.port, proc=self.proc)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.load(r)

    def put(self, key: str, value: str) -> int:
        answer = self.call("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                          "value": base64.b64encode(value.encode()).decode()})
        return int(answer["header"]["revision"])

    def exists(self, key: str) -> bool:
        return bool(self.call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs"))

    def writes(self) -> float:
        """Puts and transactions the store has applied (etcd's own metrics)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(("etcd_mvcc_put_total", "etcd_mvcc_txn_total")))


class Node:
    def __init__(self, procs: Processes, home: Path, name: str, body: str, cluster: str | None,
                 cluster_name: str = CLUSTER) -> None:
        self.procs, self.name = procs, name
        self.port, self.metrics_port = free_port(), free_port()
        self.path = home / f"{name}.toml"
        self.path.write_text(f"""pid_file = "{home / name}.pid"
workers = 1
[log]
level = "info"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
[[listen]]
address = "127.0.0.1:{self.port}"
protocol = "http"
upstream = "web"
backlog = 4096
{body}
""" + (f"""[cluster]
endpoints = ["{cluster}"]
name = "{cluster_name}"
node_id = "{name}"
peer = "127.0.0.1:{self.port}"
lease_ttl = 3
""" if cluster else ""))
        self.proc: Started = procs.start(name, [sys.executable, "-m", "ukproxy", "run", "-c", str(self.path)],
                                         cwd=REPO)
        wait_bound(self.port, timeout=60, proc=self.proc)
        _wait(self.status, f"{name}'s /status")

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/status", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def revision(self) -> int:
        status = self.status()
        return int(status["cluster"]["config_revision"]) if status else -1


def static_upstream(backend_port: int) -> str:
    return f'[[upstream]]\nname = "web"\nservers = ["127.0.0.1:{backend_port}"]\n'


def push_and_writes(procs: Processes, home: Path, etcd: Etcd, backend_port: int, pushes: int) -> dict[str, Any]:
    nodes = [Node(procs, home, f"n{i}", static_upstream(backend_port), etcd.url) for i in range(3)]
    key = f"/ukproxy/{CLUSTER}/nodes/"
    _wait(lambda: all(etcd.exists(key + n.name) for n in nodes), "three records")
    applied: list[float] = []
    per_node: list[float] = []
    for i in range(pushes):
        text = static_upstream(backend_port) + f'[http]\nkeepalive_timeout = "{30 + i}s"\n'
        t0 = time.monotonic()
        revision = etcd.put(f"/ukproxy/{CLUSTER}/config", text)
        pending = {n.name: n for n in nodes}
        while pending:
            for name, n in list(pending.items()):
                if n.revision() == revision:
                    per_node.append(time.monotonic() - t0)
                    del pending[name]
            if time.monotonic() - t0 > 60:
                raise RuntimeError(f"push {i}: {sorted(pending)} did not apply it within 60 s")
            time.sleep(0.01)
        applied.append(time.monotonic() - t0)
        _log(f"push {i}: every node ran it after {applied[-1] * 1000:.0f} ms")
    time.sleep(3)  # settle: the last records and statuses written (bounded at one write a second)
    window = 20.0
    w0 = etcd.writes()
    time.sleep(window)
    steady = (etcd.writes() - w0) / window
    _log(f"steady state: {steady:.2f} etcd writes/s from 3 nodes")
    victim = nodes[-1]
    t0 = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGKILL)
    _wait(lambda: not etcd.exists(key + victim.name), "the killed node's record to vanish", interval=0.02)
    gone = time.monotonic() - t0
    _log(f"a SIGKILLed node's record vanished after {gone:.2f} s (lease_ttl 3 s)")
    for n in nodes:
        procs.stop(n.proc)
    return {"push_all_nodes_ms": [round(x * 1000) for x in applied],
            "push_per_node_ms_median": round(statistics.median(per_node) * 1000),
            "steady_writes_per_s": round(steady, 3), "killed_record_gone_s": round(gone, 2)}


def _worker_cpu(node: Node) -> float:
    """CPU seconds (user + system) its workers have used so far."""
    total = 0.0
    for w in (node.status() or {}).get("workers", []):
        times = psutil.Process(w["pid"]).cpu_times()
        total += times.user + times.system
    return total


def cost(procs: Processes, home: Path, etcd: Etcd, backend_port: int, seconds: float, rounds: int) -> dict[str, Any]:
    """req/s, and the workers' CPU per request (less sensitive to what else the machine runs), of a node
    with [cluster] against the same node without it, alternated round by round."""
    lone = Node(procs, home, "lone", static_upstream(backend_port), None)
    member = Node(procs, home, "member", static_upstream(backend_port), etcd.url, "cost")
    rps: dict[str, list[float]] = {"lone": [], "member": []}
    cpu_us: dict[str, list[float]] = {"lone": [], "member": []}
    pair = [("lone", lone), ("member", member)]
    for i in range(rounds):
        for name, n in pair if i % 2 == 0 else pair[::-1]:  # alternated: neither always runs second
            before = _worker_cpu(n)
            result = wrk(f"http://127.0.0.1:{n.port}/", 16, seconds)
            cpu_us[name].append((_worker_cpu(n) - before) / max(1, result.requests) * 1e6)
            rps[name].append(result.rps)
    procs.stop(lone.proc)
    procs.stop(member.proc)
    ratios = [m / lo for m, lo in zip(rps["member"], rps["lone"], strict=True)]
    cpu_ratios = [m / lo for m, lo in zip(cpu_us["member"], cpu_us["lone"], strict=True)]
    _log(f"req/s with [cluster] / without, per round: {[round(r, 3) for r in ratios]} ({rps})")
    _log(f"worker CPU per request with [cluster] / without, per round: {[round(r, 3) for r in cpu_ratios]} "
         f"({ {k: [round(x, 1) for x in v] for k, v in cpu_us.items()} } µs)")
    return {"rps": rps, "cluster_over_lone_per_round": [round(r, 3) for r in ratios],
            "cluster_over_lone_median": round(statistics.median(ratios), 3),
            "worker_cpu_us_per_request": {k: [round(x, 1) for x in v] for k, v in cpu_us.items()},
            "cpu_per_request_cluster_over_lone_median": round(statistics.median(cpu_ratios), 3)}


def vm_upstream(netns: str, subnet: str) -> str:
    return f"""[[listen]]
address = "127.0.0.1:{{tcp}}"
protocol = "tcp"
upstream = "web"
[network]
netns = "{netns}"
subnet = "{subnet}"
[[upstream]]
name = "web"
[upstream.vm]
image = "{IMAGE}"
args = "service=httpd idle_timeout=600"
accel = "tcg"
boot_timeout = "60s"
[upstream.pool]
min = 1
max = 1
max_conns = 1
overflow = "queue"
queue_timeout = "20s"
"""


def _latencies(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /health: {response.status}")
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


def _counter(port: int, series: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def spill(procs: Processes, home: Path, etcd: Etcd, n: int) -> dict[str, Any]:
    nodes = []
    for name, subnet in (("a", "10.79.1.0/24"), ("b", "10.79.2.0/24")):
        tcp = free_port()
        body = vm_upstream(procs.new_netns_name(), subnet).replace("{tcp}", str(tcp))
        node = Node(procs, home, name, body, etcd.url, "spill")  # not the pushes' cluster: its own upstreams
        node.tcp_port = tcp  # type: ignore[attr-defined]
        nodes.append(node)
    a, b = nodes
    for node in nodes:
        _wait(lambda n=node: any(vm["state"] == "running" for vm in (n.status() or {}).get("vms", [])),
              f"{node.name}'s VM", 120)
    _wait(lambda: (a.status() or {}).get("cluster", {}).get("spill_peers", {}).get("web"), "a to know b", 90)
    home_ms = [x * 1000 for x in _latencies(a.port, n)]
    held = socket.create_connection(("127.0.0.1", a.tcp_port), timeout=30)  # type: ignore[attr-defined]
    try:
        held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not held.recv(100).startswith(b"HTTP/1.1 200"):
            raise RuntimeError("could not hold a's VM")
        spilled_ms = [x * 1000 for x in _latencies(a.port, n)]
    finally:
        held.close()
    series = 'ukproxy_worker_events_total{event="spilled:web"}'
    _wait(lambda: _counter(a.metrics_port, series) >= n, "a's spill count (flushed once a second)", 10)
    spilled = _counter(a.metrics_port, series)
    peer_ms = [x * 1000 for x in _latencies(b.port, n)]
    for node in nodes:
        procs.stop(node.proc)
    figures = {"home_ms_median": round(statistics.median(home_ms), 2),
               "spilled_ms_median": round(statistics.median(spilled_ms), 2),
               "peer_direct_ms_median": round(statistics.median(peer_ms), 2), "requests": n,
               "spilled_requests_counted": spilled}
    _log(f"spill: {figures}")
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vm", action="store_true", help="also the spill latency with VM-backed nodes (root, QEMU)")
    ap.add_argument("--pushes", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0, help="per wrk run of the cost comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="push,cost,spill", help="a comma-separated subset of push,cost,spill")
    ap.add_argument("--keep", type=Path, default=None, help="run in this directory and leave the logs there")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    tools.require("etcd", "wrk", "nginx", *(["qemu-system-x86_64", "ip"] if args.vm else []))
    with tempfile.TemporaryDirectory(prefix="ukproxy-bench-cluster-") as tmp:
        home = args.keep.resolve() if args.keep else Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        procs = Processes(home)
        try:
            backend_port = free_port()
            nginx.start(procs, "backend", nginx.backend_conf(home / "backend", 1, backend_port), [backend_port])
            etcd = Etcd(procs, home)
            load = os.getloadavg()
            result: dict[str, Any] = {"machine": tools.machine(), "load_before": [round(x, 2) for x in load]}
            if "push" in parts:
                result["push"] = push_and_writes(procs, home, etcd, backend_port, args.pushes)
            if "cost" in parts:
                result["cost"] = cost(procs, home, etcd, backend_port, args.seconds, args.rounds)
            if args.vm and "spill" in parts:
                result["spill"] = spill(procs, home, etcd, 200)
            result["load_after"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            procs.stop_all()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
