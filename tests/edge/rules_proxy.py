"""Helpers for the edge tests (headers, rewrites, request ids, real addresses, PROXY protocol, compression):
the config head they share (`edge_config`), one real ukproxy per test module on free ports, and curl as the
client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

# A config for `ukproxy check` and `loads` tests to add bad keys to: nothing is started from it.
CHECK_BASE = """
[[listen]]
address = "127.0.0.1:9"
protocol = "http"
upstream = "app"
[[upstream]]
name = "app"
servers = ["127.0.0.1:9"]
"""


def edge_config(port: int, backend: str, *, log: Path | None = None, listen: str = "") -> str:
    """The head every edge test's config starts with: one worker, no metrics listener, an access log at `log`
    if given, an http listener on `port` (more keys for it in `listen`) whose upstream "app" is the server at
    `backend` ("host:port"). The test's own tables follow it."""
    log_table = f'[log]\naccess_log = "{log}"\n' if log is not None else ""
    return f"""workers = 1
[metrics]
enabled = false
{log_table}[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
{listen}
[[upstream]]
name = "app"
servers = ["{backend}"]
"""


def serve_edge(tmp: Path, tables: str) -> Iterator[str]:
    """For a module fixture: an edge_config site plus `tables` in front of a fresh Backend("app"); yields its
    base URL and stops both afterwards."""
    backend = Backend("app")
    try:
        proxy, ports = start(tmp, lambda ports: edge_config(ports[0], backend.address) + tables, 1)
        try:
            yield f"http://127.0.0.1:{ports[0]}"
        finally:
            proxy.stop()
    finally:
        backend.close()


def start(tmp: Path, make_config: Callable[[list[int]], str], ports: int) -> tuple[RunningProxy, list[int]]:
    """A master for `make_config(ports)`, retried on other ports if one was taken meanwhile."""
    for attempt in range(5):
        chosen = [free_port() for _ in range(ports)]
        proxy = RunningProxy(tmp, make_config(chosen), name=f"edge{attempt}")
        try:
            proxy.start(wait_ports=chosen, expect_workers=1)
            return proxy, chosen
        except AssertionError as e:
            proxy.stop()
            if "Address already in use" not in str(e) or attempt == 4:
                raise
    raise AssertionError("unreachable")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> dict:
        return json.loads(self.body)

    def upstream_headers(self, name: str) -> list[str]:
        """From the test backend's /headers answer: what the upstream received."""
        return [v for n, v in self.json()["headers"] if n.lower() == name.lower()]


def curl(url: str, *args: str) -> Response:
    """One request with curl (-i: the head too); never follows redirects."""
    out = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", *args, url], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return Response(int(lines[0].split()[1]), headers, body)


def log_lines(path: Path, needle: str, count: int = 1) -> list[str]:
    """The access log's lines holding `needle`, once there are `count` (it is flushed every second)."""
    def lines() -> list[str]:
        text = path.read_text() if path.exists() else ""
        return [line for line in text.splitlines() if needle in line]

    return wait_until(lines, f"{count} access log line(s) with {needle!r}", accept=lambda found: len(found) >= count)
