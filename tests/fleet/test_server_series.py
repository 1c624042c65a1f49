"""Per-server metric series (`server="<vm id>"`) leave /metrics with their VM: a pool that grows and shrinks
does not grow its series without bound (static servers' series stay: tests/observability/test_server_series.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fleet.conftest import qemu_of
from tests.fleet.test_fleet import fleet_config, hold, start_fleet
from tests.observability.helpers import Scrape, scrape, status
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]

PER_SERVER = ("ukproxy_upstream_server_requests_total", "ukproxy_upstream_server_active")


def servers_in(page: Scrape, upstream: str) -> set[str]:
    """The server labels of every per-server series of `upstream` (parsed by prometheus_client's parser)."""
    return {s.labels["server"] for name in PER_SERVER for s in page.samples.get(name, ())
            if s.labels.get("upstream") == upstream}


def test_gone_vms_leave_metrics(netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]) -> None:
    port, metrics_port = free_port(), free_port()
    pool = 'min = 1\nmax = 3\nmax_conns = 2\noverflow = "spawn"\nsurplus = "destroy"\nidle_timeout = "1s"\n'
    pool += 'queue_timeout = "20s"'
    extra = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=1, pool=pool, extra=extra),
                        port, 1)
    held = hold(port, 5)  # 5 connections need 3 VMs of 2 slots each
    try:
        grown = wait_until(lambda: servers_in(scrape(metrics_port), "web"), "series for 3 VMs",
                           accept=lambda servers: len(servers) == 3, timeout=30, context=proxy.log)
    finally:
        for s in held:
            s.close()
    wait_until(lambda: len(qemu_of(netns_name)) == 1, "surplus VMs stopped", timeout=30, context=proxy.log)
    live = {vm["id"] for vm in status(metrics_port)["vms"]}
    assert len(live) == 1 and live < grown
    assert grown <= set(re.findall(r"VM (\S+) up:", proxy.log()))  # the series were named by VM ids
    page = scrape(metrics_port)
    assert servers_in(page, "web") == live  # the two gone VMs' series are gone
    assert page.value("ukproxy_upstream_server_requests_total", upstream="web") >= 1
