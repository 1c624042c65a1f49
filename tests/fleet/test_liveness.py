"""Every VM pool has a liveness check by default: a VM that stops answering is replaced and counted,
and /status shows each VM's last check (when, and its result)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import qemu_of
from tests.fleet.test_fleet import fleet_config, get
from tests.observability import helpers
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]


def vm_rows(mport: int) -> list[dict[str, Any]]:
    try:
        return helpers.status(mport)["vms"]
    except OSError:  # the master's /status listener is not up yet
        return []


def test_stopped_vm_is_replaced_by_the_default_tcp_check(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    # The default check (TCP; `fails` 2 out of rotation, 3 more replaced) on a shorter interval than its
    # 2 s: waiting out five failures at the default took this test 20 s. A pool without the section gets
    # the same check (test_config; test_leaks waits for it to pass on such a pool).
    health = '[upstream.health]\ninterval = "300ms"\ntimeout = "500ms"'
    text = fleet_config(port, netns_name, unikernel_image, workers=1, pool="min = 1\nmax = 1", health=health,
                        extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"')
    proxy = ukproxy(text).start([port])
    # The check has run and passed: /status says when, and that it passed.
    rows = wait_until(lambda: vm_rows(mport), "a VM whose last check passed",
                      accept=lambda vms: len(vms) == 1 and vms[0]["health"] == "pass", timeout=60, context=proxy.log)
    first = rows[0]
    assert 0 <= first["last_health_check"] < 30 and first["last_health_check_at"] > 0
    assert get(port)[0] == 200
    table = proxy.cli("status").stdout
    assert "ago pass" in table, table

    victim = qemu_of(netns_name)[0]
    os.kill(victim.pid, signal.SIGSTOP)  # QEMU frozen: the guest's TCP answers nothing
    try:
        wait_until(lambda: vm_rows(mport), "the stopped VM's checks to fail",
                   accept=lambda vms: any(vm["id"] == first["id"] and vm["health"] == "fail" for vm in vms),
                   timeout=60, context=proxy.log)
        replaced = wait_until(lambda: vm_rows(mport), "a replacement VM whose check passed",
                              accept=lambda vms: len(vms) == 1 and vms[0]["id"] != first["id"]
                              and vms[0]["health"] == "pass", timeout=90, context=proxy.log)
    finally:
        if victim.is_running():
            os.kill(victim.pid, signal.SIGCONT)
    assert replaced[0]["pid"] != victim.pid and not victim.is_running()
    assert helpers.scrape(mport).value("ukproxy_vm_replacements_total", upstream="web", reason="unhealthy") == 1
    assert get(port)[0] == 200


def test_type_none_turns_the_liveness_check_off(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    # A short interval, so that several would-be checks are due within a few seconds of boot.
    health = '[upstream.health]\ntype = "none"\ninterval = "500ms"\ntimeout = "500ms"'
    text = fleet_config(port, netns_name, unikernel_image, workers=1, pool="min = 1\nmax = 1",
                        health=health, extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"')
    proxy = ukproxy(text).start([port])
    wait_until(lambda: vm_rows(mport), "a VM", accept=lambda vms: len(vms) == 1, timeout=60, context=proxy.log)
    assert get(port)[0] == 200
    # Four check intervals later, still no check has run.
    rows = wait_until(lambda: vm_rows(mport), "the VM 2 s up", accept=lambda vms: vms[0]["uptime"] >= 2,
                      timeout=30, context=proxy.log)
    assert rows[0]["last_health_check"] is None and rows[0]["health"] is None
