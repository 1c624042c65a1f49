"""A real two-worker ukproxy for the limit, access and auth tests (edge/guard.py), and ways to read it.

`start_guarded` writes a config whose listeners get free ports (`{port0}`, `{port1}`, ...), whose
upstream is the test's backend (`{backend}`), and whose metrics listen on a port of their own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.running import RunningProxy, free_port
from tests.waiting import wait_until


class Guarded:
    def __init__(self, proxy: RunningProxy, ports: list[int], metrics_port: int):
        self.proxy = proxy
        self.ports = ports
        self.metrics_port = metrics_port

    def url(self, listener: int, path: str = "/x") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a family's samples whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self) -> None:
        self.proxy.stop()


def start_guarded(tmp: Path, config: str, backend: str, listeners: int) -> Guarded:
    ports = [free_port() for _ in range(listeners)]
    metrics_port = free_port()
    v6 = [p for i, p in enumerate(ports) if f"[::1]:{{port{i}}}" in config]
    text = config.replace("{backend}", backend)  # not str.format: TOML inline tables have braces too
    for i, port in enumerate(ports):
        text = text.replace(f"{{port{i}}}", str(port))
    text = f'workers = 2\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' + text
    proxy = RunningProxy(tmp, text, name="guarded").start(wait_ports=[p for p in ports if p not in v6],
                                                         expect_workers=2)
    for port in v6:
        wait_until(lambda port=port: _listens_v6(port), f"ukproxy to listen on [::1]:{port}", context=proxy.log)
    guarded = Guarded(proxy, ports, metrics_port)
    # The master listens before its workers accept: wait until both have started their accept cycles (their
    # metrics appear then), or a test's first second of traffic would wait in the backlog.
    wait_until(lambda: _workers_in(guarded), "both workers to accept", accept=lambda n: n == 2, context=proxy.log)
    return guarded


def _workers_in(guarded: Guarded) -> int:
    try:
        text = guarded.metrics()
    except OSError:
        return 0
    return len(set(re.findall(r'ukproxy_worker_accepted_connections\{.*?worker="(\d+)"', text)))


def _listens_v6(port: int) -> bool:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.connect(("::1", port))  # connected and closed without a byte: no request reaches a backend
        except OSError:
            return False
        return True


def curl(url: str, *args: str) -> tuple[int, str]:
    """(status, headers and body) from a real curl."""
    out = subprocess.run(["curl", "-s", "-i", "--max-time", "20", *args, url], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.match(r"HTTP/1\.1 (\d+)", out)
    return (int(m.group(1)) if m else 0), out
