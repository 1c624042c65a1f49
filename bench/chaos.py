"""Chaos under load: wrk runs through ukproxy while workers and VMs are killed, a VM is paused,
a TAP is set down and the config is reloaded. Reports requests sent and failed, how long each
event took to recover from, and what was left behind after the stop.

    python -m bench.chaos [--seconds 40] [--protocol http|tcp] [--json FILE]

Needs root (the backend namespace), QEMU, wrk and the unikernel image (`make -C unikernels`).
Traffic goes to 127.0.0.1 only; the VMs live in a namespace made for this run and removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench.procs import free_port

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "unikernels" / "build" / "httpd.elf"


def config_text(port: int, metrics_port: int, netns: str, protocol: str, pid_file: str, min_vms: int) -> str:
    return f"""
workers = 2
pid_file = "{pid_file}"
worker_shutdown_timeout = "5s"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[network]
netns = "{netns}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "{protocol}"
upstream = "web"
[[upstream]]
name = "web"
balance = "least_conn"
connect_timeout = "500ms"
tries = 3
[upstream.vm]
image = "{IMAGE}"
args = "service=httpd"
accel = "tcg"
boot_timeout = "20s"
[upstream.pool]
min = {min_vms}
max = 4
max_conns = 64
[upstream.health]
type = "http"
interval = "500ms"
timeout = "400ms"
fails = 2
"""


@dataclass
class Probe:
    """Sequential requests on fresh connections: when did the service fail, and when did it recover."""

    port: int
    results: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            ok = False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.settimeout(1.0)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
                ok = s.recv(64).startswith(b"HTTP/1.1 200")
            self.results.append((time.monotonic(), ok))
            time.sleep(0.05)

    def recovery_after(self, t: float, until: float) -> tuple[int, float]:
        """Failed probes between t and until, and seconds from t to the last of them (0 when none failed)."""
        window = [(at, ok) for at, ok in self.results if t <= at < until]
        failed = [at for at, ok in window if not ok]
        return len(failed), (failed[-1] - t if failed else 0.0)


@dataclass
class Event:
    name: str
    at: float
    detail: str = ""
    failed_probes: int = 0
    recovery_seconds: float = 0.0


class Chaos:
    def __init__(self, seconds: float, protocol: str):
        self.seconds = seconds
        self.protocol = protocol
        self.netns = f"ukc-{uuid.uuid4().hex[:8]}"
        self.dir = Path(tempfile.mkdtemp(prefix="ukproxy-chaos-"))
        self.port = free_port()
        self.metrics_port = free_port()
        self.pid_file = str(self.dir / "ukproxy.pid")
        self.config_path = self.dir / "ukproxy.toml"
        self.config_path.write_text(config_text(self.port, self.metrics_port, self.netns, protocol, self.pid_file, 2))
        self.log_path = self.dir / "ukproxy.log"
        self.master: subprocess.Popen[bytes] | None = None
        self.events: list[Event] = []
        self.worker_pids_seen: set[int] = set()

    # the pieces under test

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the master writes here for its whole life
        self.master = subprocess.Popen([sys.executable, "-m", "ukproxy", "run", "-c", str(self.config_path)],
                                       cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while self.log().count("in rotation") < 4:
            if time.monotonic() > deadline or self.master.poll() is not None:
                raise RuntimeError(f"ukproxy did not bring up its VMs:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        assert self.master is not None
        found = []
        for c in psutil.Process(self.master.pid).children():
            try:  # an exited worker stays a zombie until the master reaps it
                if c.status() != psutil.STATUS_ZOMBIE and "ukproxy.worker" in " ".join(c.cmdline()):
                    found.append(c)
            except psutil.Error:
                continue
        self.worker_pids_seen.update(w.pid for w in found)
        return found

    def vms(self) -> list[psutil.Process]:
        marker = f"ukproxy:{self.netns}:"
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if p.info["status"] != psutil.STATUS_ZOMBIE
                and any(a.startswith(marker) for a in p.info["cmdline"] or [])]

    def worker_rss(self) -> list[float]:
        """Each live worker's resident memory in MiB: bounded over a long run, not growing with requests."""
        sizes = []
        for w in self.workers():
            with contextlib.suppress(psutil.Error):
                sizes.append(round(w.memory_info().rss / 2**20, 1))
        return sorted(sizes)

    # the events

    def kill_worker(self) -> str:
        victim = random.choice(self.workers())
        victim.kill()
        return f"worker pid {victim.pid}"

    def kill_vm(self) -> str:
        victim = random.choice(self.vms())
        victim.kill()
        return f"QEMU pid {victim.pid}"

    def pause_vm(self) -> str:
        victim = random.choice(self.vms())
        cmdline = victim.cmdline()
        path = cmdline[cmdline.index("-qmp") + 1].removeprefix("unix:").split(",")[0]
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            f = s.makefile("rwb")
            f.readline()
            for command in ("qmp_capabilities", "stop"):
                f.write(json.dumps({"execute": command}).encode() + b"\n")
                f.flush()
                while b'"return"' not in (line := f.readline()):
                    if not line:
                        raise RuntimeError("QMP closed")
        return f"QEMU pid {victim.pid} paused"

    def tap_down(self) -> str:
        links = subprocess.run(["ip", "-n", self.netns, "-o", "link", "show"], capture_output=True, text=True).stdout
        taps = re.findall(r"\d+: (uktap\d+)", links)
        tap = random.choice(taps)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "dev", tap, "down"], check=True)
        return f"{tap} down"

    def reload(self) -> str:
        assert self.master is not None
        os.kill(self.master.pid, signal.SIGHUP)
        return "SIGHUP"

    # the run

    def run(self) -> dict[str, object]:
        self.start()
        assert self.master is not None
        fds_before = psutil.Process(self.master.pid).num_fds()
        rss_before = self.worker_rss()
        probe = Probe(self.port)
        prober = threading.Thread(target=probe.run, daemon=True)
        prober.start()
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{int(self.seconds)}s", "--timeout", "2s",
                                f"http://127.0.0.1:{self.port}/"], stdout=subprocess.PIPE, text=True)
        plan = [self.kill_worker, self.kill_vm, self.pause_vm, self.tap_down, self.reload,
                self.kill_worker, self.kill_vm, self.reload]
        start = time.monotonic()
        gap = (self.seconds - 4) / len(plan)
        for i, action in enumerate(plan):
            time.sleep(max(0.0, start + 2 + i * gap - time.monotonic()))
            at = time.monotonic()
            self.events.append(Event(action.__name__, at, action()))
        out, _ = wrk.communicate(timeout=self.seconds + 30)
        probe.stop.set()
        prober.join(5)
        ends = [e.at for e in self.events[1:]] + [time.monotonic()]
        for event, end in zip(self.events, ends, strict=True):
            event.failed_probes, event.recovery_seconds = probe.recovery_after(event.at, end)
        fds_after = psutil.Process(self.master.pid).num_fds()
        rss_after = self.worker_rss()
        leftovers = self.stop()
        return {
            "protocol": self.protocol, "seconds": self.seconds, "wrk": parse_wrk(out),
            "probes": len(probe.results), "failed_probes": sum(1 for _, ok in probe.results if not ok),
            "events": [asdict(e) | {"at": round(e.at - start, 2)} for e in self.events],
            "master_fds_before": fds_before, "master_fds_after": fds_after, "leftovers": leftovers,
            "worker_rss_mib_before": rss_before, "worker_rss_mib_after": rss_after,
            "worker_restarts": self.log().count(") died:"), "vm_replacements": self.log().count("replacing"),
        }

    def stop(self) -> dict[str, object]:
        assert self.master is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.master.pid, signal.SIGTERM)
        try:
            self.master.wait(30)
        except subprocess.TimeoutExpired:
            self.master.kill()
        time.sleep(0.5)
        qemu = [p.pid for p in self.vms()]
        namespace = os.path.exists(f"/run/netns/{self.netns}")
        workers = [p.pid for p in self.worker_pids_seen if psutil.pid_exists(p)]
        found = re.search(r"run directory (\S+)", self.log())
        run_dirs = [found.group(1)] if found and os.path.exists(found.group(1)) else []
        for pid in qemu:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        if namespace:
            subprocess.run(["ip", "netns", "delete", self.netns], check=False)
        return {"qemu_processes": qemu, "namespace": namespace, "workers": workers,
                "run_dirs": run_dirs}


def parse_wrk(out: str) -> dict[str, object]:
    requests = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True)) \
        if errors else {}
    return {"requests": int(requests.group(1)) if requests else 0, "requests_per_second": float(rps.group(1)) if rps
            else 0.0, "socket_errors": socket_errors, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--protocol", choices=("http", "tcp"), default="http")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("chaos: needs root (the backend namespace, bridge and TAPs)", file=sys.stderr)
        return 1
    for tool in ("wrk", "qemu-system-x86_64"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            print(f"chaos: {tool} is missing (make deps installs it)", file=sys.stderr)
            return 1
    if not IMAGE.exists():
        print(f"chaos: {IMAGE} is missing (make -C unikernels builds it)", file=sys.stderr)
        return 1
    chaos = Chaos(args.seconds, args.protocol)
    try:
        report = chaos.run()
    except BaseException:
        print(f"chaos: failed; the config and ukproxy's log are in {chaos.dir}", file=sys.stderr)
        raise
    finally:
        if chaos.master is not None and chaos.master.poll() is None:
            chaos.stop()
    shutil.rmtree(chaos.dir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    left = report["leftovers"]
    return 1 if any(left.values()) else 0  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
