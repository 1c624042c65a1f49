"""Fixtures for cluster tests: a real etcd-server, and ukproxy nodes (real masters) joined to it.

Nodes use static backends on loopback (no VMs): what is under test is the coordination, and each
node's VM fleet is the same code as a lone master's."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.cluster.etcd_server import Etcd
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

CLUSTER = "t"
TTL = 3


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    server = Etcd(tmp_path).start()
    yield server
    server.remove()


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    made: list[Backend] = []

    def make(name: str) -> Backend:
        made.append(Backend(name))
        return made[-1]

    yield make
    for b in made:
        b.close()


class Node(RunningProxy):
    """A ukproxy master with a [cluster] section; its workers are remembered so a SIGKILL leaves none."""

    def __init__(self, tmp: Path, etcd: Etcd, node_id: str, backend: Backend, name: str | None = None,
                 endpoint: str | None = None, cluster: str = CLUSTER, extra: str = ""):
        self.node_id = node_id
        self.port = free_port()
        self.metrics_port = free_port()
        text = f"""workers = 1
{extra}
[[listen]]
address = "127.0.0.1:{self.port}"
protocol = "http"
upstream = "web"

[[upstream]]
name = "web"
servers = ["{backend.address}"]

[metrics]
listen = "127.0.0.1:{self.metrics_port}"

[cluster]
endpoints = ["{endpoint or etcd.url}"]
name = "{cluster}"
node_id = "{node_id}"
peer = "127.0.0.1:{self.port}"
lease_ttl = {TTL}
"""
        super().__init__(tmp, text, name or node_id)
        self.known_workers: set[int] = set()

    def start_node(self) -> Node:
        self.start(wait_ports=[self.port], expect_workers=1)
        wait_until(self.status, f"{self.node_id}'s /status", context=self.log)
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/status", timeout=3) as resp:
                status = json.loads(resp.read())
        except OSError:
            return None
        self.known_workers.update(w["pid"] for w in status.get("workers", []) if "pid" in w)
        return status

    def cluster(self) -> dict[str, Any]:
        status = self.status()
        assert status is not None, self.log()
        return status["cluster"]

    def get(self, path: str = "/") -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()

    def sigkill(self) -> None:
        self.status()
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self) -> None:
        super().stop()
        for pid in self.known_workers:  # orphaned by a SIGKILLed master
            try:
                proc = psutil.Process(pid)
                if "ukproxy.worker" in " ".join(proc.cmdline()):
                    proc.kill()
            except psutil.Error:
                continue


@pytest.fixture
def nodes(tmp_path: Path, etcd: Etcd) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(node_id: str, backend: Backend, name: str | None = None, endpoint: str | None = None) -> Node:
        made.append(Node(tmp_path, etcd, node_id, backend, name, endpoint))
        return made[-1]

    yield make
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.pid, signal.SIGCONT)  # a test that failed while it was stopped
        node.stop()


def records(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return etcd.get_prefix(f"/ukproxy/{CLUSTER}/nodes/")


def statuses(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return etcd.get_prefix(f"/ukproxy/{CLUSTER}/status/")
