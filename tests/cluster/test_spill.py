"""Spill to peers: two nodes, each a master in a network namespace of its own (on a bridge with etcd and
the clients, tests/cluster/node_network.py), with its own VM pool in its own backend namespace and subnet.
When one node's pool is full its requests go to the peer, which serves them from its own VMs only (and
answers 503 at once when it is full too); as the load drops they come home (docs/cluster.md)."""

from __future__ import annotations

import http.client
import ipaddress
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.etcd_server import Etcd
from tests.cluster.node_network import NodeNetwork, inside
from tests.fleet.conftest import qemu_of, unikernel_image  # noqa: F401 - a fixture, used by name
from tests.observability.helpers import Scrape
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]


@pytest.fixture(scope="module")
def network() -> Iterator[NodeNetwork]:
    net = NodeNetwork().up()
    yield net
    net.down()


@pytest.fixture(scope="module")
def etcd(network: NodeNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(tmp_path_factory.mktemp("etcd"), host=network.hub_address)
    inside(network.hub, server.start)
    yield server
    server.remove()


class VmNode(RunningProxy):
    """A cluster node whose upstream `web` is a pool of one httpd VM taking one connection at a time,
    behind an http listener (what spills) and a tcp one (a session there holds the VM's only slot)."""

    def __init__(self, tmp: Path, etcd: Etcd, cluster: str, node_id: str, subnet: str, image: Path,
                 namespace: str, address: str):
        self.node_id = node_id
        self.namespace, self.address = namespace, address  # where the master runs, and its address there
        self.netns = f"ukt-spill-{uuid.uuid4().hex[:8]}"  # its backend network, which it makes
        self.port, self.tcp_port, self.metrics_port = free_port(), free_port(), free_port()
        self.access_log = tmp / f"{node_id}-access.log"
        self.killed = False
        super().__init__(tmp, f"""workers = 1
[log]
access_log = "{self.access_log}"
access_format = "json"
[network]
netns = "{self.netns}"
subnet = "{subnet}"
[[listen]]
address = "{address}:{self.port}"
protocol = "http"
upstream = "web"
[[listen]]
address = "{address}:{self.tcp_port}"
protocol = "tcp"
upstream = "web"
[[upstream]]
name = "web"
connect_timeout = "2s"
[upstream.vm]
image = "{image}"
args = "service=httpd idle_timeout=600"
accel = "tcg"
boot_timeout = "60s"
[upstream.pool]
min = 1
max = 1
max_conns = 1
overflow = "queue"
queue_timeout = "20s"
[metrics]
listen = "{address}:{self.metrics_port}"
[cluster]
endpoints = ["{etcd.url}"]
name = "{cluster}"
node_id = "{node_id}"
peer = "{address}:{self.port}"
lease_ttl = 3
""", node_id)

    def start_in_namespace(self) -> VmNode:
        inside(self.namespace, self.start)  # the master, and all it starts, in the node's namespace
        return self

    # From a thread in the hub namespace (the test's body runs in one):

    def _metrics_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}{path}", timeout=10) as resp:
            return resp.read().decode()

    def status(self) -> dict[str, Any]:
        return json.loads(self._metrics_get("/status"))

    def scrape(self) -> Scrape:
        return Scrape(self._metrics_get("/metrics"))

    def vm_address(self) -> str:
        return next(vm["address"] for vm in self.status()["vms"] if vm["state"] == "running")

    def served(self, path: str) -> list[dict[str, Any]]:
        """The access log's lines for `path` (written out about once a second)."""
        if not self.access_log.exists():
            return []
        lines = [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]
        return [line for line in lines if line.get("uri") == path]

    def hold(self) -> socket.socket:
        """A tcp session through the node to its VM, kept open: the VM's only slot is taken."""
        s = socket.create_connection((self.address, self.tcp_port), timeout=30)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        return s


def knows_peers(node: VmNode, *peers: str) -> None:
    """Until the node spills to exactly `peers`, each with its VM ready (a peer booting its VM has no room,
    but the record it wrote before the boot began may still say it has)."""
    wait_until(lambda: node.status()["cluster"]["spill_peers"], f"{node.node_id} to spill to {peers}",
               accept=lambda p: [(x["node"], x.get("ready")) for x in p.get("web", [])] == [(n, 1) for n in peers],
               timeout=30, context=node.log)


def queued_at_home(node: VmNode, path: str) -> int:
    """GET `path` while the node's VM is held; once the request waits in the node's own queue, free the VM.
    The request's status."""
    held = node.hold()
    answer: dict[str, int] = {}
    waiting = threading.Thread(target=lambda: answer.setdefault("status", get(node, path)))
    waiting.start()
    try:
        wait_until(lambda: node.scrape().value("ukproxy_pool_queue_length", upstream="web"),
                   f"{path} in {node.node_id}'s own queue", accept=lambda n: n == 1, timeout=10, context=node.log)
    finally:
        held.close()
        waiting.join(30)
    return answer.get("status", 0)


def get(node: VmNode, path: str, timeout: float = 30.0) -> int:
    conn = http.client.HTTPConnection(node.address, node.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def one_line(node: VmNode, path: str) -> dict[str, Any]:
    return wait_until(lambda: node.served(path), f"{node.node_id}'s access log line for {path}",
                      accept=lambda lines: len(lines) == 1, timeout=10, context=node.log)[0]


@pytest.fixture(scope="module")
def two_nodes(network: NodeNetwork, etcd: Etcd, tmp_path_factory: pytest.TempPathFactory,
              unikernel_image: Path) -> Iterator[tuple[VmNode, VmNode]]:  # noqa: F811
    """Booted once for the module; its last test SIGKILLs b."""
    cluster = f"spill{uuid.uuid4().hex[:6]}"
    tmp_path = tmp_path_factory.mktemp("spill")
    a = VmNode(tmp_path, etcd, cluster, "a", "10.78.1.0/24", unikernel_image, *network.add_node(1))
    b = VmNode(tmp_path, etcd, cluster, "b", "10.78.2.0/24", unikernel_image, *network.add_node(2))
    try:
        for node in (a, b):
            node.start_in_namespace()
        for node in (a, b):
            wait_until(lambda n=node: n.log().count("in rotation"), f"{node.node_id}'s VM in rotation",
                       timeout=90, context=node.log)
        yield a, b
    finally:
        for node in (a, b):
            node.stop()
        for node in (a, b):
            leftovers = qemu_of(node.netns)
            for p in leftovers:
                p.kill()
            namespace_left = Path(f"/run/netns/{node.netns}").exists()
            if namespace_left:
                subprocess.run(["ip", "netns", "delete", node.netns], check=False)
            if not node.killed:  # a SIGKILLed master cleans nothing up: its successor would, at start
                assert not leftovers and not namespace_left, f"{node.netns} left QEMU or its namespace behind"


def test_a_full_pool_spills_to_the_peer_which_serves_locally_and_requests_come_home(network, two_nodes):
    inside(network.hub, lambda: spill_and_home(*two_nodes))  # the clients are on the nodes' network


def spill_and_home(a: VmNode, b: VmNode) -> None:
    knows_peers(a, "b")
    knows_peers(b, "a")
    shown = a.cli("status")
    assert shown.returncode == 0 and "spills web to b (" in shown.stdout, shown.stdout + shown.stderr
    a_vm, b_vm = a.vm_address(), b.vm_address()

    assert get(a, "/health?home") == 200
    assert one_line(a, "/health?home")["upstream_addr"] != "peer b"

    held_a = a.hold()
    try:
        # a's only VM is busy: its requests go to b, whose own VM serves them.
        for i in range(3):
            assert get(a, f"/health?spilled-{i}") == 200, a.log()[-2000:] + b.log()[-2000:]
            assert one_line(a, f"/health?spilled-{i}")["upstream_addr"] == "peer b"
            assert one_line(b, f"/health?spilled-{i}")["upstream_addr"] not in ("peer a", None)
        wait_until(lambda: a.scrape().value("ukproxy_worker_events_total", event="spilled:web"),
                   "a's spill counter", accept=lambda n: n == 3, timeout=10)

        # Both full: b answers the spilled request 503 at once (it never passes it on, nor queues it),
        # a leaves b out and queues the request at home, where it is served once a's VM is free.
        held_b = b.hold()
        answer: dict[str, int] = {}
        waiting = threading.Thread(target=lambda: answer.setdefault("status", get(a, "/health?both-full")))
        waiting.start()
        try:
            assert one_line(b, "/health?both-full")["status"] == 503
            wait_until(lambda: a.scrape().value("ukproxy_pool_queue_length", upstream="web"),
                       "the request in a's own queue", accept=lambda n: n == 1, timeout=10, context=a.log)
        finally:
            held_a.close()
            waiting.join(30)
        assert answer.get("status") == 200
        assert one_line(a, "/health?both-full")["upstream_addr"] != "peer b"
        held_b.close()
    finally:
        held_a.close()

    # The load dropped: a's requests are served at home again.
    assert get(a, "/health?home-again") == 200
    assert one_line(a, "/health?home-again")["upstream_addr"] != "peer b"
    assert b.served("/health?home-again") == []

    # Each node's VMs are in a network of their own: from b's namespace (where its master is, and its
    # connections to peers) a's VM is not even routable.
    probe = (f"import socket; s = socket.socket(); s.settimeout(5)\n"
             f"host, port = {a_vm!r}.rsplit(':', 1)\n"
             "try:\n    s.connect((host, int(port)))\n    print('connected')\n"
             "except OSError as e:\n    print(e.errno)\n")
    seen = subprocess.run(["ip", "netns", "exec", b.namespace, sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=30)
    assert seen.stdout.strip() == "101", (seen.stdout, seen.stderr)  # ENETUNREACH
    assert ipaddress.ip_address(a_vm.rsplit(":", 1)[0]) in ipaddress.ip_network("10.78.1.0/24")
    assert ipaddress.ip_address(b_vm.rsplit(":", 1)[0]) in ipaddress.ip_network("10.78.2.0/24")
    assert a.status()["cluster"]["etcd"] == "connected"


def test_a_killed_peer_is_left_out_at_once_and_leaves_the_list_with_its_record(network, two_nodes):
    inside(network.hub, lambda: killed_peer(*two_nodes))


def killed_peer(a: VmNode, b: VmNode) -> None:
    knows_peers(a, "b")
    b.signal(signal.SIGKILL)
    b.killed = True
    assert b.proc is not None
    b.proc.wait(10)
    # Its orphaned worker notices the master is gone and leaves: nothing listens on b's port any more.
    wait_until(lambda: _refused(b), "b's port to close", timeout=30)

    # Still on a's list (the lease outlives b by up to its TTL): the spill fails to connect, b is left
    # out, and the request waits in a's own queue instead, served at home.
    assert queued_at_home(a, "/health?b-dead") == 200
    assert one_line(a, "/health?b-dead")["upstream_addr"] != "peer b"
    wait_until(lambda: a.scrape().value("ukproxy_upstream_failures_total", upstream="web"),
               "a's failed attempt on b counted", accept=lambda n: n >= 1, timeout=10)

    # Its record gone with its lease, b leaves a's list: a full pool queues at home, trying nobody.
    knows_peers(a)
    assert queued_at_home(a, "/health?alone") == 200
    assert one_line(a, "/health?alone")["upstream_addr"] != "peer b"


def _refused(node: VmNode) -> bool:
    try:
        socket.create_connection((node.address, node.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
