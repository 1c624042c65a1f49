"""GET /status and `ukproxy status`: the stub_status figures and a row per worker, matching the real fleet."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.observability.helpers import exchange, status, tcp_config, wait_until
from tests.running import RunningProxy, echo_servers, free_port


def test_status_matches_the_fleet_and_the_traffic(ukproxy: Callable[..., RunningProxy]) -> None:
    port, mport = free_port(), free_port()
    with echo_servers(1) as backends:
        proxy = ukproxy(tcp_config(port, mport, [backends[0].port], workers=2, extra="reuseport = true"))
        proxy.start([port, mport], expect_workers=2)
        pids = {w.pid for w in proxy.workers()}
        ready = wait_until(lambda: status(mport), "both workers ready",
                           accept=lambda s: all(w["state"] == "ready" for w in s["workers"]))
        assert {w["pid"] for w in ready["workers"]} == pids
        assert sorted(w["slot"] for w in ready["workers"]) == [0, 1]
        assert ready["master"]["pid"] == proxy.pid
        assert ready["vms"] == []

        for i in range(7):
            assert exchange(port, b"x" * (i + 1)) == b"x" * (i + 1)
        after: dict[str, Any] = wait_until(lambda: status(mport), "7 accepts", accept=lambda s: s["accepts"] == 7)
        assert after["handled"] == 7
        assert sum(w["accepted"] for w in after["workers"]) == 7
        assert after["active"] == after["reading"] + after["writing"] + after["waiting"] == 0
        assert all(w["connections"] == 0 for w in after["workers"])

        shown = proxy.cli("status")
        assert shown.returncode == 0, shown.stderr
        assert "accepts 7" in shown.stdout and "handled 7" in shown.stdout
        for pid in pids:
            assert str(pid) in shown.stdout
        raw = proxy.cli("status", "--json")
        assert raw.returncode == 0, raw.stderr
        assert {w["pid"] for w in json.loads(raw.stdout)["workers"]} == pids


def test_status_cli_says_when_no_master_answers(ukproxy: Callable[..., RunningProxy]) -> None:
    proxy = ukproxy(tcp_config(free_port(), free_port(), [free_port()]))  # written, never started
    shown = proxy.cli("status")
    assert shown.returncode == 1
    assert "no status from http://127.0.0.1:" in shown.stderr and "is the master running?" in shown.stderr


def test_metrics_port_taken_leaves_the_proxy_serving(ukproxy: Callable[..., RunningProxy]) -> None:
    import socket

    port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as squatter, echo_servers(1) as backends:
        mport = squatter.getsockname()[1]
        proxy = ukproxy(tcp_config(port, mport, [backends[0].port], workers=1)).start([port], expect_workers=1)
        assert exchange(port, b"still serving") == b"still serving"
        wait_until(proxy.log, "the metrics listener's error in the log", accept=lambda text: "cannot listen on" in text)
