import subprocess

import pytest

from bridge.network import BackendNetwork
from bridge.reconcile import reconcile
from tests.bridge import iproute2
from tests.bridge.conftest import needs_root

pytestmark = [pytest.mark.root, needs_root]


def test_reconcile_removes_stale_taps_and_keeps_the_listed_ones(network: BackendNetwork) -> None:
    network.up()
    for name in ("uktap1", "uktap2", "uktap3"):
        network.add_tap(name)
    kept_index = iproute2.links(network.netns)["uktap2"]["ifindex"]
    removed = reconcile(network, keep_taps={"uktap2", "uktap9"})
    assert removed == ["uktap1", "uktap3"]
    found = iproute2.links(network.netns)
    assert sorted(n for n, rec in found.items() if iproute2.is_tap(rec)) == ["uktap2"]
    assert found["uktap2"]["ifindex"] == kept_index  # the VM holding it is undisturbed
    assert "uktap9" not in found  # keeping does not mean creating


def test_reconcile_after_a_crash_left_a_broken_namespace(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    network.add_tap("uktap2")
    ns = network.netns
    subprocess.run(["ip", "-n", ns, "link", "del", "ukbr0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "uktap1", "down"], check=True)
    assert reconcile(network, keep_taps={"uktap1"}) == ["uktap2"]
    found = iproute2.links(ns)
    assert found["uktap1"]["master"] == "ukbr0"
    assert "UP" in found["uktap1"]["flags"]
    assert iproute2.ipv4_addresses(ns, "ukbr0") == ["10.77.0.1/24"]


def test_reconcile_on_a_clean_machine_builds_the_network(network: BackendNetwork) -> None:
    assert reconcile(network, keep_taps=set()) == []
    assert network.netns in iproute2.netns_names()
    assert network.status()["bridge"]["gateway_ok"] is True
