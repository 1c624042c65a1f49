import os
import socket
import subprocess

import pytest

from bridge.errors import NamespaceMissing
from bridge.netns import create_netns, enter_netns, list_netns, netns_exists, netns_path, remove_netns
from tests.bridge import iproute2
from tests.bridge.conftest import needs_root
from tests.bridge.forked import call_in_fork

pytestmark = [pytest.mark.root, needs_root]


def test_create_is_idempotent_visible_to_ip_and_brings_lo_up(netns_name: str) -> None:
    assert create_netns(netns_name) is True
    assert create_netns(netns_name) is False
    assert netns_name in iproute2.netns_names()
    assert netns_name in list_netns()
    assert "UP" in iproute2.links(netns_name)["lo"]["flags"]


def test_remove_is_idempotent(netns_name: str) -> None:
    create_netns(netns_name)
    assert remove_netns(netns_name) is True
    assert remove_netns(netns_name) is False
    assert netns_name not in iproute2.netns_names()
    assert not netns_exists(netns_name)


def test_create_repairs_a_leftover_unmounted_file(netns_name: str) -> None:
    path = netns_path(netns_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # what a create that died between open and mount leaves behind
    assert not netns_exists(netns_name)
    assert netns_name not in list_netns()
    assert create_netns(netns_name) is True
    assert netns_exists(netns_name)
    assert "lo" in iproute2.links(netns_name)


def _names_and_namespace_after_entering(name: str) -> tuple[list[str], int]:
    enter_netns(name)
    return [n for _, n in socket.if_nameindex()], os.stat("/proc/self/ns/net").st_ino


def test_forked_child_that_enters_sees_the_namespace_and_the_parent_stays(netns_name: str) -> None:
    create_netns(netns_name)
    subprocess.run(["ip", "-n", netns_name, "link", "add", "ukt-mark0", "type", "bridge"], check=True)
    ours = os.stat("/proc/self/ns/net").st_ino
    names, child_ns = call_in_fork(_names_and_namespace_after_entering, netns_name)
    assert "ukt-mark0" in names
    assert child_ns == netns_path(netns_name).stat().st_ino
    assert os.stat("/proc/self/ns/net").st_ino == ours
    assert "ukt-mark0" not in [n for _, n in socket.if_nameindex()]


def test_enter_in_preexec_fn_runs_the_program_inside(netns_name: str) -> None:
    create_netns(netns_name)
    subprocess.run(["ip", "-n", netns_name, "link", "add", "ukt-mark0", "type", "bridge"], check=True)
    out = subprocess.run(
        ["ip", "-brief", "link", "show"],
        preexec_fn=lambda: enter_netns(netns_name),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "ukt-mark0" in out


def test_entering_a_missing_namespace_is_a_clear_error(netns_name: str) -> None:
    with pytest.raises(NamespaceMissing, match=netns_name):
        enter_netns(netns_name)
