"""Active health checks of static servers, through a real ukproxy and real backend processes.

A server that fails its checks leaves rotation and comes back once they pass again; it is never
"replaced". /metrics carries each server's last check (time and result).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.observability import helpers
from tests.running import RunningProxy, free_port, wait_for_port
from tests.waiting import wait_until


class NamedBackend:
    """`python -m http.server` in a process of its own, answering GET / with its name."""

    def __init__(self, root: Path, name: str, port: int | None = None):
        self.name = name
        self.root = root / name
        self.root.mkdir(exist_ok=True)
        (self.root / "index.html").write_text(name)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "--directory", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies only once it runs
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Callable[[str], NamedBackend]]:
    made: list[NamedBackend] = []

    def make(name: str) -> NamedBackend:
        backend = NamedBackend(tmp_path, name)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.kill()


def config(port: int, mport: int, servers: list[NamedBackend], health: str) -> str:
    listed = ", ".join(f'"127.0.0.1:{b.port}"' for b in servers)
    return f"""
workers = 1
[metrics]
listen = "127.0.0.1:{mport}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "u"
[[upstream]]
name = "u"
servers = [{listed}]
connect_timeout = "1s"
read_timeout = "2s"
[upstream.health]
interval = "200ms"
timeout = "500ms"
fails = 2
path = "/"
{health}
"""


def check_ok(mport: int, backend: NamedBackend) -> float | None:
    page = helpers.scrape(mport)
    found = [s.value for s in page.samples.get("ukproxy_upstream_server_check_ok", ())
             if s.labels.get("server") == f"127.0.0.1:{backend.port}"]
    return found[0] if found else None


def served_by(port: int, n: int) -> set[str]:
    return {helpers.get(port, "/", timeout=10)[1].decode() for _ in range(n)}


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_failing_static_server_is_kept_out_then_comes_back(
    kind: str, backends: Callable[[str], NamedBackend], ukproxy: Callable[..., RunningProxy]
) -> None:
    a, b = backends("a"), backends("b")
    port, mport = free_port(), free_port()
    proxy = ukproxy(config(port, mport, [a, b], f'type = "{kind}"')).start([port], expect_workers=1)
    wait_until(lambda: (check_ok(mport, a), check_ok(mport, b)), "both servers checked and passing",
               accept=lambda v: v == (1.0, 1.0), context=proxy.log)
    assert served_by(port, 4) == {"a", "b"}

    # http: a stopped process still completes TCP handshakes (the kernel does), but never answers a
    # GET; tcp: a killed one refuses connections.
    if kind == "http":
        a.signal(signal.SIGSTOP)
    else:
        a.kill()
    wait_until(lambda: check_ok(mport, a), "a to fail its checks", accept=lambda v: v == 0.0, context=proxy.log)
    assert served_by(port, 10) == {"b"}  # out of rotation: nothing waits on a

    if kind == "http":
        a.signal(signal.SIGCONT)
    else:
        a.start()
    wait_until(lambda: check_ok(mport, a), "a to pass again", accept=lambda v: v == 1.0, context=proxy.log)
    wait_until(lambda: served_by(port, 4), "a back in rotation", accept=lambda seen: "a" in seen, context=proxy.log)
    assert "replac" not in proxy.log()  # a static server is never replaced
