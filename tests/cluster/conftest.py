"""Fixtures for cluster tests: a real etcd-server, and ukproxy nodes (real masters) joined to it.

Each node is a master in a network namespace of its own, on a bridge with etcd and the clients (the hub,
tests/cluster/node_network.py), and has its own backend subnet in its namespace. A test's body runs in
the hub. The backends are static (no VMs): what is under test is the coordination, and each node's VM
fleet is the same code as a lone master's. A node's local file names a backend in its own subnet, which
it alone reaches; a pushed shared config names backends on the hub (`backends`), which every node reaches."""

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
from tests.cluster.node_network import NodeNetwork, entered, inside
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port, wait_for_listening
from tests.waiting import wait_until

CLUSTER = "t"
TTL = 3


@pytest.fixture(scope="session")
def network() -> Iterator[NodeNetwork]:
    """One for the modules that use it (the spill tests make their own): its node namespaces serve test
    after test, each test's nodes gone before the next starts."""
    net = NodeNetwork().up()
    yield net
    net.down()


@pytest.fixture
def hub(network: NodeNetwork) -> Iterator[NodeNetwork]:
    """The test's body in the hub namespace: the clients it makes, the CLI runs and etcd it starts."""
    with entered(network.hub):
        yield network
    network.heal_all()


@pytest.fixture(scope="module")
def etcd_server(network: NodeNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(tmp_path_factory.mktemp("etcd"), host=network.etcd_address)
    inside(network.hub, server.start)
    yield server
    server.remove()


@pytest.fixture
def etcd(etcd_server: Etcd, hub: NodeNetwork) -> Etcd:
    """The module's etcd, running (a test may have killed it and failed before its restart) and empty."""
    if etcd_server.proc is None or etcd_server.proc.poll() is not None:
        etcd_server.start()
    etcd_server.delete_all()
    return etcd_server


@pytest.fixture
def backends(hub: NodeNetwork) -> Iterator[Callable[[str], Backend]]:
    """Backends on the hub, which every node reaches: the servers a pushed shared config names."""
    made: list[Backend] = []

    def make(name: str) -> Backend:
        made.append(Backend(name, host=hub.hub_address))
        return made[-1]

    yield make
    for b in made:
        b.close()


class Node(RunningProxy):
    """A ukproxy master with a [cluster] section, in its own namespace (`network.node(i)`) whose backend
    subnet holds its local upstream's server; its workers are remembered so a SIGKILL leaves none.
    Its methods are called from the hub."""

    def __init__(self, tmp: Path, etcd: Etcd, node_id: str, place: tuple[str, str, str], backend: str,
                 name: str | None = None, cluster: str = CLUSTER, extra: str = ""):
        self.node_id = node_id
        self.namespace, self.address, backend_host = place
        self.backend = inside(self.namespace, lambda: Backend(backend, host=backend_host))
        self.port = free_port()
        self.metrics_port = free_port()
        text = f"""workers = 1
{extra}
[[listen]]
address = "{self.address}:{self.port}"
protocol = "http"
upstream = "web"

[[upstream]]
name = "web"
servers = ["{self.backend.address}"]

[metrics]
listen = "{self.address}:{self.metrics_port}"

[cluster]
endpoints = ["{etcd.url}"]
name = "{cluster}"
node_id = "{node_id}"
peer = "{self.address}:{self.port}"
lease_ttl = {TTL}
"""
        super().__init__(tmp, text, name or node_id)
        self.known_workers: set[int] = set()
        self.status_error: OSError | None = None

    def start_node(self) -> Node:
        return start_nodes(self)[0]

    def launch(self) -> None:
        """The master started in the node's namespace (and all it starts: its workers)."""
        inside(self.namespace, self.start)

    def wait_ready(self) -> None:
        inside(self.namespace, self._wait_listening)
        # Its worker ready, not merely started: a loaded machine can take seconds to import it, and a
        # request sent meanwhile waits in the listen backlog (once past a 10 s client timeout).
        wait_until(self.status, f"{self.node_id}'s worker ready", accept=_worker_ready, timeout=30,
                   context=lambda: f"last /status error: {self.status_error!r}\n{self.log()}")

    def _wait_listening(self) -> None:
        try:
            wait_for_listening(self.port, host=self.address)
        except AssertionError as e:
            raise AssertionError(f"{self.node_id} did not listen on {self.port}: {e}\n{self.log()}") from None

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/status", timeout=3) as resp:
                status = json.loads(resp.read())
        except OSError as e:
            self.status_error = e
            return None
        self.known_workers.update(w["pid"] for w in status.get("workers", []) if "pid" in w)
        return status

    def cluster(self) -> dict[str, Any]:
        status = self.status()
        assert status is not None, self.log()
        return status["cluster"]

    def get(self, path: str = "/") -> tuple[int, str]:
        with urllib.request.urlopen(f"http://{self.address}:{self.port}{path}", timeout=10) as resp:
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


def start_nodes(*nodes: Node) -> tuple[Node, ...]:
    """Started side by side (their start-ups overlap), each returned once its worker is ready."""
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_ready()
    return nodes


def _worker_ready(status: dict[str, Any] | None) -> bool:
    return bool(status and status["workers"] and all(w["state"] == "ready" for w in status["workers"]))


@pytest.fixture
def nodes(tmp_path: Path, etcd: Etcd, hub: NodeNetwork) -> Iterator[Callable[..., Node]]:
    """make(node_id, backend name): the test's next node, in the next node namespace, with a backend of
    that name in its own subnet."""
    made: list[Node] = []

    def make(node_id: str, backend: str, name: str | None = None) -> Node:
        made.append(Node(tmp_path, etcd, node_id, hub.node(len(made) + 1), backend, name))
        return made[-1]

    yield make
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.pid, signal.SIGCONT)  # a test that failed while it was stopped
        node.stop()
        node.backend.close()


def records(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return etcd.get_prefix(f"/ukproxy/{CLUSTER}/nodes/")


def statuses(etcd: Etcd) -> dict[str, dict[str, Any]]:
    return etcd.get_prefix(f"/ukproxy/{CLUSTER}/status/")
