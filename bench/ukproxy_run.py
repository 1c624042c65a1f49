"""ukproxy masters for the bench: config texts (static backends or a VM pool) and reading their logs and /status."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Processes, Started, wait_bound, wait_for

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "unikernels" / "build" / "httpd.elf"

VM_UP = re.compile(r"VM (\S+) up: (\S+):(\d+) on CPU (\S+), pid (\d+), ready in (\d+) ms")


def head(workers: int, metrics_port: int, level: str = "warning", top: str = "") -> str:
    """The top of every bench config: workers, `top` (more top-level keys), errors to stderr, no client closed
    mid-run, metrics on their port. Workers unpinned, as nginx's and HAProxy's are by default
    (worker_cpu_affinity off): on a machine whose cores the clients share, a pinned worker waits for its
    core while the other is free (TLS handshakes: 0.64x nginx's rate pinned, 1.10x unpinned, one machine)."""
    return f"""workers = {workers}
worker_connections = 4096
cpu_affinity = "off"
{top}[log]
error_log = "stderr"
level = "{level}"
[http]
keepalive_requests = 100000  # as the nginx configs (bench/nginx.py): neither closes clients mid-run
[metrics]
listen = "127.0.0.1:{metrics_port}"
"""


def config_text(*, workers: int, metrics_port: int, listeners: list[tuple[int, str]], upstream: str,
                accept_mutex: bool = False, reuseport: bool = True, netns: str | None = None,
                pool: str = "min = 1\nmax = 1\nmax_conns = 1024\noverflow = \"queue\"",
                level: str = "info") -> str:
    """listeners: (port, "tcp"|"http") all to upstream "b"; upstream: 'servers = [...]' or 'vm'."""
    out = head(workers, metrics_port, level,
               top=f"accept_mutex = {str(accept_mutex).lower()}\nreuseport = {str(reuseport).lower()}\n")
    if netns:
        out += f'[network]\nnetns = "{netns}"\nbridge = "ukbr0"\n'
    for port, protocol in listeners:
        out += f'[[listen]]\naddress = "127.0.0.1:{port}"\nprotocol = "{protocol}"\nupstream = "b"\nbacklog = 4096\n'
    # half_close = false: what nginx stream does by default (proxy_half_close off), so both do the same work.
    out += '[[upstream]]\nname = "b"\nbalance = "least_conn"\nconnect_timeout = "2s"\nhalf_close = false\n'
    if upstream == "vm":
        out += f"""[upstream.vm]
image = "{IMAGE}"
args = "service=httpd"
accel = "tcg"
memory = 16
boot_timeout = "20s"
[upstream.pool]
{pool}
"""
    else:
        out += upstream + "\n"
    return out


@dataclass
class VmUp:
    vm_id: str
    host: str
    port: int
    pid: int
    ready_ms: float


class Ukproxy:
    def __init__(self, procs: Processes, name: str, text: str, metrics_port: int) -> None:
        self.procs = procs
        self.name = name
        self.metrics_port = metrics_port
        home = procs.raw_dir / name  # its own pid file: the master names its run dir (metrics, lock) after it
        home.mkdir(parents=True, exist_ok=True)
        self.config_path = home / "ukproxy.toml"
        self.config_path.write_text(f'pid_file = "{home / "ukproxy.pid"}"\n' + text)
        self.proc: Started | None = None

    def start(self, ports: list[int]) -> Ukproxy:
        self.proc = self.procs.start(self.name, [sys.executable, "-m", "ukproxy", "run", "-c", str(self.config_path)],
                                     cwd=REPO)
        for port in ports:
            wait_bound(port, timeout=60, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    def vms_up(self) -> list[VmUp]:
        return [VmUp(m[0], m[1], int(m[2]), int(m[4]), float(m[5])) for m in VM_UP.findall(self.log())]

    def wait_log(self, pattern: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            if self.proc is None or self.proc.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: waited {timeout}s for {count}x {pattern!r}:\n" + "\n".join(
            self.log().splitlines()[-30:]))

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/status", timeout=5) as r:
            return json.load(r)

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Until /status shows `workers` workers, each ready (its listeners set up, its imports done)."""
        def ready() -> bool:
            try:
                found = self.status()["workers"]
            except OSError:
                return False
            return len(found) == workers and all(w["state"] == "ready" for w in found)

        wait_for(ready, f"{self.name}'s {workers} workers ready", timeout, self.proc.popen if self.proc else None)

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]
