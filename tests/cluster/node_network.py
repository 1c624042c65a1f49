"""A network of cluster nodes on one machine: each node a network namespace of its own, joined by a veth
pair to a bridge in a hub namespace (where etcd and the test's clients are). Every address lives in a
namespace made here, and everything is deleted afterwards (the veths go with their namespaces).

Code runs in a namespace through `inside`: a thread that entered it (setns moves one thread), whose
sockets, threads and child processes (a master, etcd, a backend) are then in that namespace. `entered`
moves the calling thread itself for a while (a test's body, which starts clients and CLI runs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

from bridge import enter_netns

T = TypeVar("T")
SUBNET = "10.90.0"  # the hub (and the clients) at .1, etcd at .2, node i at .(10 + i)
BACKEND_SUBNETS = "10.91"  # node i's own backends in 10.91.i.0/24, in its namespace alone
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def inside(namespace: str, fn: Callable[[], T]) -> T:
    """fn() run by a thread in `namespace`; its result, or its exception raised here."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            enter_netns(namespace)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller's thread as is
            out["error"] = e

    thread = threading.Thread(target=run, name=f"in-{namespace}")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """The calling thread in `namespace` meanwhile, then back in the one it was in."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns(namespace)
        yield
    finally:
        back = _libc.setns(home, CLONE_NEWNET)
        os.close(home)
        if back != 0:
            raise OSError(ctypes.get_errno(), "setns back to the test's own network namespace")


class NodeNetwork:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.hub = f"ukt-hub-{self.tag}"
        self.hub_address = f"{SUBNET}.1"
        self.etcd_address = f"{SUBNET}.2"  # apart from the clients': a node cut from etcd still serves them
        self.namespaces: list[str] = []
        self.nodes: dict[int, tuple[str, str]] = {}
        self.cut: set[str] = set()

    def up(self) -> NodeNetwork:
        self._add_namespace(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.hub_address}/24", "dev", "br0")
        _ip("-n", self.hub, "addr", "add", f"{self.etcd_address}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        return self

    def node(self, index: int) -> tuple[str, str, str]:
        """Node `index`'s namespace (made on first use, kept for the network's life), its address on the
        hub's bridge, and its backend address: the gateway of its own backend subnet, on its loopback."""
        if index not in self.nodes:
            namespace, address = self.add_node(index)
            _ip("-n", namespace, "addr", "add", f"{BACKEND_SUBNETS}.{index}.1/24", "dev", "lo")
            self.nodes[index] = namespace, address
        return *self.nodes[index], f"{BACKEND_SUBNETS}.{index}.1"

    def cut_from_etcd(self, namespace: str) -> None:
        """A partition between the node and etcd alone: no route there (a connect fails at once), and its
        open connections to etcd aborted, as the node's TCP would find them in the end."""
        _ip("-n", namespace, "route", "add", "unreachable", f"{self.etcd_address}/32")
        self.cut.add(namespace)
        subprocess.run(["ss", "-N", namespace, "-K", "dst", self.etcd_address], check=True, capture_output=True,
                       timeout=30)

    def heal(self, namespace: str) -> None:
        _ip("-n", namespace, "route", "del", "unreachable", f"{self.etcd_address}/32")
        self.cut.discard(namespace)

    def heal_all(self) -> None:
        """After a test that failed while a node was cut: the namespaces outlive it, for the next tests."""
        for namespace in list(self.cut):
            self.heal(namespace)

    def add_node(self, index: int) -> tuple[str, str]:
        """A node's namespace, on the hub's bridge: its name and address."""
        namespace = f"ukt-node{index}-{self.tag}"
        address = f"{SUBNET}.{10 + index}"
        self._add_namespace(namespace)
        hub_end = f"v{index}-{self.tag}"
        _ip("-n", self.hub, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("-n", self.hub, "link", "set", hub_end, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        return namespace, address

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def down(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        self.namespaces.clear()
