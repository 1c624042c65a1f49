"""Nothing leaks: many connections and many VM replacements leave fds, processes, TAPs and files as they were."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.fleet.conftest import qemu_of
from tests.fleet.test_fleet import fleet_config, get, start_fleet
from tests.observability import helpers
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]

REPLACEMENTS = 25


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def taps(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": uktap" in line)


def live_vms(mport: int) -> dict[int, str]:
    """QEMU pid → state of every VM the master's /status lists."""
    return {vm["pid"]: vm["state"] for vm in helpers.status(mport)["vms"]}


def test_connect_disconnect_cycles_and_vm_replacements_leak_nothing(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    metrics = f'[metrics]\nlisten = "127.0.0.1:{mport}"'
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=2, extra=metrics), port, 2)
    assert get(port)[0] == 200
    # After each VM's first liveness check: a worker opens the metric files it records checks in then. The
    # config has no [upstream.health]: this is the default check, which every VM pool gets (test_liveness).
    wait_until(lambda: helpers.status(mport)["vms"], "both VMs checked",
               accept=lambda vms: len(vms) == 2 and all(vm["health"] == "pass" for vm in vms), context=proxy.log)
    workers = proxy.workers()
    before = {p.pid: fd_count(p.pid) for p in [psutil.Process(proxy.pid), *workers]}

    for i in range(1000):  # half served, half dropped before a byte is answered
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            if i % 2:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(12) == b"HTTP/1.1 200"
    # The last connections close asynchronously in the workers: wait for the fds to come back.
    wait_until(lambda: {pid: fd_count(pid) for pid in before}, f"every process back to its fds {before}",
               accept=lambda after: all(after[pid] <= before[pid] for pid in before), context=proxy.log)

    run_dir = next(line.split("run directory ")[1].strip() for line in proxy.log().splitlines()
                   if "run directory " in line)
    metrics_files_before = sorted(os.listdir(os.path.join(run_dir, "metrics")))
    # Every check below is exact (TAPs, fds, metric files, processes), so one leaked per replacement shows
    # after the first; the repetitions are for leaks that only some replacements hit (a race with the boot).
    for n in range(REPLACEMENTS):
        victim = qemu_of(netns_name)[0]
        victim.kill()
        wait_until(lambda: live_vms(mport), f"replacement {n + 1}: two running VMs, pid {victim.pid} not one",
                   accept=lambda vms, v=victim: len(vms) == 2 and v.pid not in vms
                   and set(vms.values()) == {"running"} and len(qemu_of(netns_name)) == 2,
                   timeout=30, context=proxy.log)
    assert get(port)[0] == 200
    # One TAP per live VM and the spare: the dead ones' TAPs were removed. The spare is made after the last
    # replacement's boot, so it may still be on its way.
    wait_until(lambda: taps(netns_name), "three TAPs: the two VMs' and the spare", accept=lambda t: len(t) == 3,
               timeout=10, context=proxy.log)
    wait_until(lambda: fd_count(proxy.pid), f"the master back to {before[proxy.pid]} fds",  # /status probes close
               accept=lambda fds: fds <= before[proxy.pid], context=proxy.log)
    assert sorted(os.listdir(os.path.join(run_dir, "metrics"))) == metrics_files_before
    assert {w.pid for w in proxy.workers()} == {w.pid for w in workers}  # no worker died on the way

    proxy.signal(15)
    assert proxy.wait(30) == 0
    assert not os.path.exists(run_dir)
    assert not qemu_of(netns_name)
