"""Nginx's promise: reloads and a lost worker under full load, with users noticing nothing (or only
the connections that were on the lost worker). The load runs until the test has done what it does under
it, then is interrupted (wrk and ab report on SIGINT): no figure here depends on the machine's speed."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.fleet.test_fleet import get, start_fleet
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

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


def reloaded_generation(proxy: RunningProxy) -> int:
    """The generation of the master's last completed reload (0 before any)."""
    return max(map(int, re.findall(r"reloaded: generation (\d+)", proxy.log())), default=0)


# A request lost at a handover (new workers accepting, old ones draining) is lost at any reload; three
# back to back also leave two older generations draining at once while the newest serves. Ten took CI
# 50 s on two cores, each reload starting two Python workers under wrk and ab, and caught nothing more.
RELOADS = 3


def reload_repeatedly(proxy: RunningProxy) -> None:
    """RELOADS reloads, each complete (new workers ready, old ones told to drain) before the next."""
    for _ in range(RELOADS):
        generation = reloaded_generation(proxy)
        proxy.signal(signal.SIGHUP)
        wait_until(lambda g=generation: reloaded_generation(proxy), f"reload {generation + 1} to complete",
                   accept=lambda g, was=generation: g == was + 1, context=proxy.log)


def client_connections(proxy: RunningProxy, port: int) -> dict[int, int]:
    """Established client connections on `port`, by worker pid."""
    counts = {}
    for w in proxy.workers():
        try:
            counts[w.pid] = sum(1 for c in w.net_connections(kind="tcp")
                                if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED")
        except psutil.Error:  # a draining worker that just left
            continue
    return counts


def interrupted(load: subprocess.Popen[str]) -> str:
    """Stop a wrk or ab run early and take its report."""
    load.send_signal(signal.SIGINT)
    out, _ = load.communicate(timeout=30)
    return out


@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("ab") is None, reason="wrk/ab: `make deps`")
def test_reloads_under_load_fail_no_request(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    proxy = start_fleet(ukproxy, http_fleet(port, netns_name, unikernel_image), port, 2)
    url = f"http://127.0.0.1:{port}/health"
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d300s", "--timeout", "5s", url],
                           stdout=subprocess.PIPE, text=True)  # keep-alive clients
    ab = subprocess.Popen(["ab", "-q", "-c4", "-t300", "-n1000000", "-s5", url],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # a connection per request
    try:
        wait_until(lambda: sum(client_connections(proxy, port).values()), "wrk's 16 connections open",
                   accept=lambda n: n >= 16, context=proxy.log)
        reload_repeatedly(proxy)
        assert wrk.poll() is None and ab.poll() is None  # every reload happened under load
    finally:
        wrk_out, ab_out = interrupted(wrk), interrupted(ab)
    requests, failed = wrk_failures(wrk_out)
    assert requests > 0 and failed == 0, wrk_out
    requests, failed = ab_failures(ab_out)
    assert requests > 0 and failed == 0, ab_out
    assert reloaded_generation(proxy) == RELOADS
    assert get(port)[0] == 200


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: `make deps`")
def test_killed_worker_under_load_loses_only_its_own_connections(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    proxy = start_fleet(ukproxy, http_fleet(port, netns_name, unikernel_image), port, 2)
    wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d300s", "--timeout", "5s", f"http://127.0.0.1:{port}/health"],
                           stdout=subprocess.PIPE, text=True)
    try:
        held = wait_until(lambda: client_connections(proxy, port), "wrk's 16 connections open",
                          accept=lambda counts: sum(counts.values()) >= 16, context=proxy.log)
        victim = next(w for w in proxy.workers() if w.pid in held)
        own = held[victim.pid]
        victim.kill()
        survivors = {w.pid for w in proxy.workers()} - {victim.pid}
        proxy.wait_workers(2, exclude={victim.pid})  # respawned
        # wrk reconnects the killed worker's connections to the others: load after the loss, then stop
        wait_until(lambda: sum(client_connections(proxy, port).values()), "wrk's connections open again",
                   accept=lambda n: n >= 16, context=proxy.log)
    finally:
        wrk_out = interrupted(wrk)
    requests, failed = wrk_failures(wrk_out)
    assert requests > 0
    assert failed <= own, f"{failed} failures, but the killed worker held only {own} connections\n{wrk_out}"
    assert survivors <= {w.pid for w in proxy.workers()}
    assert victim.pid not in {w.pid for w in proxy.workers()}
    assert psutil.pid_exists(proxy.pid)
