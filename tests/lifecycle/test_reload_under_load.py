"""Nginx's promise: reloads and a lost worker under full load, with users noticing nothing (or only
the connections that were on the lost worker)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.fleet.test_fleet import get, start_fleet, wait_until
from tests.running import RunningProxy, free_port

pytestmark = [pytest.mark.root, pytest.mark.qemu]


def http_fleet(port: int, netns: str, image: Path) -> str:
    return f"""
workers = 2
worker_shutdown_timeout = "5s"
[network]
netns = "{netns}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "web"
[http]
keepalive_requests = 1000000  # wrk's connections stay put, so a worker's share is what it holds
[[upstream]]
name = "web"
balance = "least_conn"
[upstream.vm]
image = "{image}"
args = "service=httpd"
accel = "tcg"
boot_timeout = "20s"
[upstream.pool]
min = 1
max = 2
"""


def wrk_failures(out: str) -> tuple[int, int]:
    """(requests, failed) from wrk's report: socket errors and non-2xx/3xx answers are failures."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        failed += sum(map(int, m.groups()))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        failed += int(m.group(1))
    return requests, failed


def ab_failures(out: str) -> tuple[int, int]:
    requests = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    if m := re.search(r"Non-2xx responses:\s+(\d+)", out):
        failed += int(m.group(1))
    return requests, failed


def reload_ten_times(proxy: RunningProxy) -> None:
    for _ in range(10):
        before = {w.pid for w in proxy.workers()}
        proxy.signal(signal.SIGHUP)
        proxy.wait_workers(2, exclude=before)
        time.sleep(0.3)


@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("ab") is None, reason="wrk/ab: `make deps`")
def test_ten_reloads_under_load_fail_no_request(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    proxy = start_fleet(ukproxy, http_fleet(port, netns_name, unikernel_image), port, 2)
    url = f"http://127.0.0.1:{port}/health"
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d12s", "--timeout", "5s", url],
                           stdout=subprocess.PIPE, text=True)  # keep-alive clients
    ab = subprocess.Popen(["ab", "-q", "-c4", "-t12", "-n1000000", "-s5", url],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # a connection per request
    time.sleep(1)
    reload_ten_times(proxy)
    wrk_out, _ = wrk.communicate(timeout=40)
    ab_out, _ = ab.communicate(timeout=40)
    requests, failed = wrk_failures(wrk_out)
    assert requests > 500 and failed == 0, wrk_out
    requests, failed = ab_failures(ab_out)
    assert requests > 100 and failed == 0, ab_out
    assert proxy.log().count("reloaded: generation") == 10
    assert get(port)[0] == 200


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: `make deps`")
def test_killed_worker_under_load_loses_only_its_own_connections(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    proxy = start_fleet(ukproxy, http_fleet(port, netns_name, unikernel_image), port, 2)
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d6s", "--timeout", "5s", f"http://127.0.0.1:{port}/health"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    victim = proxy.workers()[0]
    own = sum(1 for c in victim.net_connections(kind="tcp") if c.laddr.port == port and c.status == "ESTABLISHED")
    victim.kill()
    survivors = {w.pid for w in proxy.workers()} - {victim.pid}
    wrk_out, _ = wrk.communicate(timeout=30)
    requests, failed = wrk_failures(wrk_out)
    assert requests > 500
    assert failed <= own, f"{failed} failures, but the killed worker held only {own} connections\n{wrk_out}"
    wait_until(lambda: len(proxy.workers()) == 2, 10, "the worker respawned", proxy)
    assert survivors <= {w.pid for w in proxy.workers()}
    assert victim.pid not in {w.pid for w in proxy.workers()}
    assert psutil.pid_exists(proxy.pid)
