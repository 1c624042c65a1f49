import asyncio
import errno
import fcntl
import os
import struct
import subprocess
from typing import Any

import pytest
import uvloop

from bridge.errors import BridgeMissing, NamespaceMissing, NotATap
from bridge.netns import enter_netns
from bridge.network import BackendNetwork
from bridge.tapfd import IFF_NO_PI, IFF_TAP, TUN_DEVICE, TUNSETIFF, open_tap
from tests.bridge import iproute2
from tests.bridge.conftest import needs_root
from tests.bridge.forked import call_in_fork

pytestmark = [pytest.mark.root, needs_root]


def snapshot(netns: str) -> dict[str, Any]:
    """Everything `up` could change, as `ip` reports it."""
    return {
        name: (
            rec["ifindex"],
            rec.get("address"),
            rec.get("master"),
            "UP" in rec["flags"],
            iproute2.ipv4_addresses(netns, name),
        )
        for name, rec in iproute2.links(netns).items()
    }


def test_up_builds_the_bridge_with_gateway_address_mac_and_state(network: BackendNetwork) -> None:
    network.up()
    assert network.netns in iproute2.netns_names()
    bridge = iproute2.links(network.netns)["ukbr0"]
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in bridge["flags"]
    assert bridge["address"] == "52:54:00:4d:00:01"
    assert iproute2.ipv4_addresses(network.netns, "ukbr0") == ["10.77.0.1/24"]


def test_up_twice_changes_nothing(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    before = snapshot(network.netns)
    network.up()
    assert snapshot(network.netns) == before


def test_up_repairs_a_bridge_deleted_by_hand_and_reattaches_taps(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    network.add_tap("uktap2")
    subprocess.run(["ip", "-n", network.netns, "link", "del", "ukbr0"], check=True)
    assert "master" not in iproute2.links(network.netns)["uktap1"]
    network.up()
    found = iproute2.links(network.netns)
    assert found["uktap1"]["master"] == found["uktap2"]["master"] == "ukbr0"
    assert iproute2.ipv4_addresses(network.netns, "ukbr0") == ["10.77.0.1/24"]


def test_up_repairs_a_wrong_address_and_a_downed_bridge(network: BackendNetwork) -> None:
    network.up()
    ns = network.netns
    subprocess.run(["ip", "-n", ns, "addr", "del", "10.77.0.1/24", "dev", "ukbr0"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", "10.99.0.1/24", "dev", "ukbr0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "ukbr0", "down"], check=True)
    assert network.status()["bridge"]["gateway_ok"] is False
    network.up()
    assert iproute2.ipv4_addresses(ns, "ukbr0") == ["10.77.0.1/24"]
    assert "UP" in iproute2.links(ns)["ukbr0"]["flags"]


def test_up_replaces_a_non_bridge_squatting_on_the_bridge_name(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("ukbr1")
    squatted = BackendNetwork(netns=network.netns, bridge="ukbr1")
    squatted.up()
    assert iproute2.links(network.netns)["ukbr1"]["linkinfo"]["info_kind"] == "bridge"


def test_add_tap_makes_a_persistent_tap_on_the_bridge_and_is_idempotent(network: BackendNetwork) -> None:
    network.up()
    index = network.add_tap("uktap3")
    assert network.add_tap("uktap3") == index
    rec = iproute2.links(network.netns)["uktap3"]
    assert rec["ifindex"] == index
    assert iproute2.is_tap(rec)
    assert rec["linkinfo"]["info_data"]["persist"] is True
    assert rec["linkinfo"]["info_data"]["pi"] is False  # QEMU opens it with IFF_NO_PI
    assert rec["master"] == "ukbr0"
    assert "UP" in rec["flags"]
    assert network.taps() == ["uktap3"]


def test_add_tap_reattaches_an_existing_tap_that_fell_off_the_bridge(network: BackendNetwork) -> None:
    network.up()
    index = network.add_tap("uktap1")
    subprocess.run(["ip", "-n", network.netns, "link", "set", "uktap1", "nomaster", "down"], check=True)
    assert network.add_tap("uktap1") == index
    rec = iproute2.links(network.netns)["uktap1"]
    assert rec["master"] == "ukbr0"
    assert "UP" in rec["flags"]


def test_remove_tap(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    network.add_tap("uktap2")
    assert network.remove_tap("uktap1") is True
    assert network.remove_tap("uktap1") is False
    assert network.taps() == ["uktap2"]
    assert "uktap1" not in iproute2.links(network.netns)


def test_remove_tap_refuses_to_delete_the_bridge(network: BackendNetwork) -> None:
    network.up()
    with pytest.raises(NotATap):
        network.remove_tap("ukbr0")
    assert "ukbr0" in iproute2.links(network.netns)


def test_add_tap_before_up_or_without_a_bridge_is_a_clear_error(network: BackendNetwork) -> None:
    with pytest.raises(NamespaceMissing):
        network.add_tap("uktap1")
    assert network.netns not in iproute2.netns_names()  # the failed call did not create it
    network.up()
    subprocess.run(["ip", "-n", network.netns, "link", "del", "ukbr0"], check=True)
    with pytest.raises(BridgeMissing):
        network.add_tap("uktap1")


def _attach_as(netns: str, name: str, uid: int) -> int:
    """Open the tun device as root, drop to `uid`, then attach: only the TAP's owner may."""
    enter_netns(netns)
    fd = os.open(TUN_DEVICE, os.O_RDWR)
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as e:
        return e.errno
    return 0


def test_owner_uid_lets_that_user_and_no_other_attach_without_privileges(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1", owner_uid=65534)
    assert iproute2.links(network.netns)["uktap1"]["linkinfo"]["info_data"]["user"] in ("nobody", "65534")
    assert call_in_fork(_attach_as, network.netns, "uktap1", 65534) == 0
    assert call_in_fork(_attach_as, network.netns, "uktap1", 65533) == errno.EPERM


def test_add_tap_with_another_owner_replaces_the_tap(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    network.add_tap("uktap1", owner_uid=65534)
    assert network.status()["taps"][0]["owner_uid"] == 65534


def test_down_removes_taps_bridge_and_namespace_and_is_idempotent(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    network.down()
    assert network.netns not in iproute2.netns_names()
    assert network.taps() == []
    assert network.status()["netns_exists"] is False
    network.down()


def test_status_reports_bridge_and_taps(network: BackendNetwork) -> None:
    assert network.status()["netns_exists"] is False
    network.up()
    network.add_tap("uktap2", owner_uid=1000)
    network.add_tap("uktap1")
    status = network.status()
    assert status["bridge"]["present"] is True
    assert status["bridge"]["addresses"] == ["10.77.0.1/24"]
    assert status["bridge"]["gateway_ok"] is True
    assert [t["name"] for t in status["taps"]] == ["uktap1", "uktap2"]
    assert all(t["on_bridge"] and t["up"] for t in status["taps"])
    assert [t["owner_uid"] for t in status["taps"]] == [None, 1000]


async def _async_lifecycle(network: BackendNetwork) -> dict[str, Any]:
    await network.up_async()
    await network.add_tap_async("uktap5")
    status = await network.status_async()
    await network.down_async()
    return status


async def test_async_api_inside_an_asyncio_loop(network: BackendNetwork) -> None:
    status = await _async_lifecycle(network)
    assert [t["name"] for t in status["taps"]] == ["uktap5"]
    assert network.netns not in iproute2.netns_names()


def test_async_api_inside_a_uvloop_loop(network: BackendNetwork) -> None:
    status = uvloop.run(_async_lifecycle(network))
    assert status["bridge"]["gateway_ok"] is True
    assert network.netns not in iproute2.netns_names()


def test_two_networks_with_the_same_bridge_name_do_not_interfere(network: BackendNetwork, netns_name: str) -> None:
    other = BackendNetwork(netns=netns_name + "b", subnet="10.78.0.0/24")  # type: ignore[arg-type]
    try:
        network.up()
        other.up()
        network.add_tap("uktap1")
        assert other.taps() == []
        assert iproute2.ipv4_addresses(other.netns, "ukbr0") == ["10.78.0.1/24"]
    finally:
        other.down()
        iproute2.delete_netns(other.netns)


def test_sync_api_still_works_after_an_event_loop_ran_in_this_thread(network: BackendNetwork) -> None:
    asyncio.run(asyncio.sleep(0))
    network.up()
    assert network.status()["bridge"]["present"] is True


def test_down_succeeds_while_a_tap_is_still_held_open(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    fd = open_tap(network.netns, "uktap1")  # as a QEMU that has not exited yet would
    try:
        network.down()
        assert network.netns not in iproute2.netns_names()
    finally:
        os.close(fd)


def test_add_tap_will_not_replace_the_bridge(network: BackendNetwork) -> None:
    network.up()
    with pytest.raises(ValueError, match="bridge"):
        network.add_tap("ukbr0")
    assert iproute2.links(network.netns)["ukbr0"]["linkinfo"]["info_kind"] == "bridge"
