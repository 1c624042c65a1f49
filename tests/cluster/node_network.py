"""A network of cluster nodes on one machine: each node a network namespace of its own, joined by a veth
pair to a bridge in a hub namespace (where etcd and the test's clients are). Every address lives in a
namespace made here, and everything is deleted afterwards (the veths go with their namespaces).

Code runs in a namespace through `inside`: a thread that entered it (setns moves one thread), whose
sockets and child processes (a master, etcd) are then in that namespace.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

from bridge import enter_netns

T = TypeVar("T")
SUBNET = "10.90.0"  # the hub at .1, node i at .(10 + i)


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


class NodeNetwork:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.hub = f"ukt-hub-{self.tag}"
        self.hub_address = f"{SUBNET}.1"
        self.namespaces: list[str] = []

    def up(self) -> NodeNetwork:
        self._add_namespace(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.hub_address}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        return self

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
