"""ukproxy with pools of real unikernel VMs: serving, pinning, overflow, queueing, surplus, failures."""

from __future__ import annotations

import http.client
import os
import pwd
import re
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.fleet.conftest import qemu_of
from tests.observability import helpers
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]


def fleet_config(port: int, netns: str, image: Path, workers: int = 2, pool: str = "min = 1\nmax = 2",
                 health: str = "", extra: str = "") -> str:
    return f"""
workers = {workers}
{extra}
[network]
netns = "{netns}"
[[listen]]
address = "127.0.0.1:{port}"
upstream = "web"
[[upstream]]
name = "web"
balance = "least_conn"
connect_timeout = "1s"
[upstream.vm]
image = "{image}"
args = "service=httpd"
accel = "tcg"
boot_timeout = "20s"
[upstream.pool]
{pool}
{health}
"""


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def vms_in_rotation(proxy: RunningProxy) -> int:
    return proxy.log().count("in rotation")


def metrics_listener(port: int) -> str:
    return f'[metrics]\nlisten = "127.0.0.1:{port}"'


def running_vms(mport: int) -> set[int]:
    """The QEMU pids of the VMs the master's /status lists as running: what is live, not what was logged."""
    return {vm["pid"] for vm in helpers.status(mport)["vms"] if vm["state"] == "running"}


def start_fleet(ukproxy: Callable[..., RunningProxy], text: str, port: int, expected_vms: int,
                name: str = "ukproxy", pid_name: str | None = None) -> RunningProxy:
    proxy = ukproxy(text, name, pid_name).start([port])
    wait_until(lambda: vms_in_rotation(proxy) >= expected_vms, f"{expected_vms} VMs in rotation", timeout=60,
               context=proxy.log)
    return proxy


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_pools_serve_through_ukproxy_pinned_and_namespaced(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image,
                                              extra=f'[metrics]\nlisten = "127.0.0.1:{mport}"'), port, expected_vms=2)
    # Each worker has a VM of its own in its pool.
    owners = dict(re.findall(r"worker (\d+): upstream web: VM (web-\d+) in rotation", proxy.log()))
    assert set(owners) == {"0", "1"} and len(set(owners.values())) == 2, owners
    for _ in range(20):
        status, body = get(port)
        assert status == 200
        served_by = re.search(rb"web-\d+", body).group().decode()  # type: ignore[union-attr]
        assert served_by in owners.values()
    assert get(port, "/health")[0] == 200
    assert get(port, "/nope")[0] == 404
    # /status: each VM's sessions as its pool counted them, summed over the workers, none in flight
    rows = wait_until(lambda: helpers.status(mport)["vms"], "22 sessions on the VM rows",
                      accept=lambda vms: sum(vm["requests"] for vm in vms) >= 22)
    assert sorted(vm["id"] for vm in rows) == sorted(owners.values())
    assert sum(vm["requests"] for vm in rows) == 22 and all(vm["active"] == 0 for vm in rows), rows

    vms = qemu_of(netns_name)
    assert len(vms) == 2
    for vm in vms:  # each QEMU, every thread, on exactly one CPU
        threads = [t.id for t in vm.threads()]
        masks = {tuple(sorted(os.sched_getaffinity(tid))) for tid in threads}
        assert len(masks) == 1 and len(masks.pop()) == 1, f"QEMU {vm.pid} not pinned"
        # and not as root: QEMU drops to the workers' user (nobody) once its TAP and files are open
        assert vm.uids().effective == vm.uids().real == pwd.getpwnam("nobody").pw_uid, vm.uids()

    backend_ns = netns_inode(f"/run/netns/{netns_name}")
    for w in proxy.workers():  # workers open their upstream sockets inside the backend namespace
        assert netns_inode(f"/proc/{w.pid}/ns/net") == backend_ns
    assert netns_inode(f"/proc/{proxy.pid}/ns/net") != backend_ns
    # The VMs are reachable only through the proxy: nothing in the host namespace routes to them.
    assert f"{netns_name}" in proxy.log()

    proxy.signal(signal.SIGTERM)
    assert proxy.wait(30) == 0
    assert not qemu_of(netns_name)
    assert not os.path.exists(f"/run/netns/{netns_name}")


def hold(port: int, n: int) -> list[socket.socket]:
    """n open connections through a tcp listener: each holds one VM slot while it is open."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        held.append(s)
    return held


def test_overflow_spawns_up_to_max_then_surplus_is_destroyed(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    pool = 'min = 1\nmax = 3\nmax_conns = 2\noverflow = "spawn"\nsurplus = "destroy"\nidle_timeout = "1s"\n'
    pool += 'queue_timeout = "20s"'
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=1, pool=pool,
                                              extra=metrics_listener(mport)), port, 1)
    held = hold(port, 5)  # 5 connections need 3 VMs of 2 slots each
    try:
        assert len(qemu_of(netns_name)) == 3
        assert running_vms(mport) == {p.pid for p in qemu_of(netns_name)}
    finally:
        for s in held:
            s.close()
    wait_until(lambda: len(qemu_of(netns_name)) == 1, "surplus VMs stopped", timeout=30, context=proxy.log)
    assert proxy.log().count("above min") == 2
    assert get(port)[0] == 200


def test_queue_waits_for_a_free_slot_then_times_out(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    pool = 'min = 1\nmax = 1\nmax_conns = 1\noverflow = "queue"\nqueue_timeout = "3s"'
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=1, pool=pool,
                                              extra=metrics_listener(mport)), port, 1)
    first = hold(port, 1)[0]
    result: dict[str, object] = {}

    def queued() -> None:
        result["answer"] = get(port, "/health", timeout=20)

    t = threading.Thread(target=queued)
    t.start()
    wait_until(lambda: helpers.scrape(mport).value("ukproxy_pool_queue_length", upstream="web"),
               "the request in the pool's queue", accept=lambda n: n == 1, context=proxy.log)
    assert "answer" not in result  # waiting in the queue for the only slot
    first.close()
    t.join(20)
    assert result["answer"][0] == 200  # type: ignore[index]
    assert len(qemu_of(netns_name)) == 1  # queued, not spawned

    # The slot is taken and never freed: a second client is turned away after queue_timeout.
    blocker = hold(port, 1)[0]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100) == b""  # closed unanswered
    finally:
        blocker.close()
    assert "no server could be reached" in proxy.log()


def test_killed_vm_under_load_is_replaced_with_few_failures(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port, mport = free_port(), free_port()
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=1,
                                              pool="min = 2\nmax = 2", extra=metrics_listener(mport)), port, 2)
    outcomes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                outcomes.append(get(port, "/health", timeout=5)[0])
            except OSError:
                outcomes.append(0)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(outcomes), "the load running", accept=lambda n: n >= 8)
    victim = qemu_of(netns_name)[0]
    victim.kill()
    wait_until(lambda: running_vms(mport), "a running replacement VM", timeout=30, context=proxy.log,
               accept=lambda pids: len(pids) == 2 and victim.pid not in pids)
    served = len(outcomes)
    wait_until(lambda: len(outcomes), "the load served after the replacement", accept=lambda n: n >= served + 8)
    stop.set()
    for t in threads:
        t.join(10)
    failed = sum(1 for o in outcomes if o != 200)
    # Connects to the dead VM are cut off and go to the other VM; a splice already carrying its
    # request to it cannot be replayed: at most one per load thread fails.
    assert failed <= len(threads), f"{failed} of {len(outcomes)} requests failed"
    assert "connections to it cut off" in proxy.log()
    assert len(qemu_of(netns_name)) == 2 and victim.pid not in {p.pid for p in qemu_of(netns_name)}


def qmp_path(vm: psutil.Process) -> str:
    cmdline = vm.cmdline()
    spec = cmdline[cmdline.index("-qmp") + 1]
    return spec.removeprefix("unix:").split(",")[0]


def qmp(path: str, command: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(b'{"execute": "%s"}\n' % cmd.encode())
            f.flush()
            while b'"return"' not in (line := f.readline()):
                assert line, "QMP closed"


def test_hung_vm_is_taken_out_by_health_checks_and_replaced(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    health = '[upstream.health]\ntype = "http"\ninterval = "300ms"\ntimeout = "300ms"\nfails = 2'
    proxy = start_fleet(ukproxy, fleet_config(port, netns_name, unikernel_image, workers=1,
                                              pool="min = 2\nmax = 2", health=health), port, 2)
    hung = qemu_of(netns_name)[0]
    qmp(qmp_path(hung), "stop")  # the guest freezes: TCP connects to it go unanswered
    wait_until(lambda: "out of rotation" in proxy.log(), "health checks to take the VM out", timeout=20,
               context=proxy.log)
    for _ in range(10):
        assert get(port, "/health")[0] == 200  # served by the healthy VM
    wait_until(lambda: hung.pid not in {p.pid for p in qemu_of(netns_name)} and len(qemu_of(netns_name)) == 2,
               "the hung VM replaced", timeout=30, context=proxy.log)


def test_master_sigkill_then_restart_cleans_up(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port = free_port()
    text = fleet_config(port, netns_name, unikernel_image, workers=1)
    first = start_fleet(ukproxy, text, port, 1)
    orphans = qemu_of(netns_name)
    assert len(orphans) == 1
    first.signal(signal.SIGKILL)
    first.wait(10)
    # The master is gone; its QEMU and namespace are still there.
    assert qemu_of(netns_name) and os.path.exists(f"/run/netns/{netns_name}")
    wait_until(lambda: not first.workers(), "orphaned workers to leave", timeout=10)
    run_dir = re.search(r"run directory (\S+)", first.log()).group(1)  # type: ignore[union-attr]
    assert os.path.exists(run_dir)  # left by the killed master
    second = start_fleet(ukproxy, text, port, 1, name="second", pid_name="ukproxy")  # the same pid file
    assert f"killing QEMU pid {orphans[0].pid} left by an earlier master" in second.log()
    assert "removed 2 TAPs left by an earlier master" in second.log()  # its VM's and the spare
    assert not orphans[0].is_running()
    assert get(port)[0] == 200
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert not os.path.exists(run_dir)  # the restarted master took over its predecessor's run directory


def two_upstreams(port_a: int, port_b: int, netns: str, image: Path, a: tuple[str, str], b: tuple[str, str]) -> str:
    """Two VM-backed upstreams behind two tcp listeners; each given as (name, pool settings)."""
    text = f'workers = 1\n[network]\nnetns = "{netns}"\n'
    for port, (name, _pool) in ((port_a, a), (port_b, b)):
        text += f'[[listen]]\naddress = "127.0.0.1:{port}"\nupstream = "{name}"\n'
    for name, pool in (a, b):
        text += (f'[[upstream]]\nname = "{name}"\n[upstream.vm]\nimage = "{image}"\nargs = "service=httpd"\n'
                 f'accel = "tcg"\nboot_timeout = "20s"\n[upstream.pool]\n{pool}\n')
    return text


def vm_pids_by_upstream(netns: str) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for p in qemu_of(netns):
        marker = next(a for a in p.cmdline() if a.startswith(f"ukproxy:{netns}:"))
        upstream = marker.rsplit(":", 1)[1].rsplit("-", 1)[0]
        found.setdefault(upstream, set()).add(p.pid)
    return found


def test_reload_keeps_resizes_adds_and_removes_vm_upstreams(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    port_a, port_b, port_c = free_port(), free_port(), free_port()
    before = two_upstreams(port_a, port_b, netns_name, unikernel_image, ("web", "min = 1\nmax = 3"),
                           ("old", "min = 1\nmax = 1"))
    proxy = start_fleet(ukproxy, before, port_a, 2)
    first = vm_pids_by_upstream(netns_name)
    assert len(first["web"]) == 1 and len(first["old"]) == 1
    after = two_upstreams(port_a, port_c, netns_name, unikernel_image, ("web", "min = 2\nmax = 3"),
                          ("new", "min = 1\nmax = 1"))
    proxy.config_path.write_text(proxy.config_path.read_text().split("\n", 1)[0] + "\n" + after)
    assert proxy.cli("reload").returncode == 0

    def settled() -> bool:
        now = vm_pids_by_upstream(netns_name)
        return len(now.get("web", ())) == 2 and len(now.get("new", ())) == 1 and "old" not in now

    wait_until(settled, "web resized to 2, new booted, old stopped", timeout=60, context=proxy.log)
    assert first["web"] <= vm_pids_by_upstream(netns_name)["web"]  # the unchanged upstream kept its VM
    assert get(port_a)[0] == 200 and get(port_c)[0] == 200
    with pytest.raises(OSError):  # the removed listener is closed
        get(port_b, timeout=2)


def test_user_networking_fallback_serves_without_a_bridge(
    netns_name: str, unikernel_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    # What a person without root gets: QEMU's user networking on loopback ports, no namespace at all.
    port = free_port()
    text = fleet_config(port, netns_name, unikernel_image, workers=1).replace(
        f'netns = "{netns_name}"', f'netns = "{netns_name}"\nmode = "user"')
    proxy = start_fleet(ukproxy, text, port, 1)
    assert get(port)[0] == 200
    assert re.search(r"VM web-\d+ in rotation \(127\.0\.0\.1:\d+\)", proxy.log())
    assert not os.path.exists(f"/run/netns/{netns_name}")  # no namespace was made
    vm = qemu_of(netns_name)[0]
    assert any(a.startswith("user,") for a in vm.cmdline())
    for w in proxy.workers():  # workers stay in the host namespace, where the forwarded ports are
        assert os.stat(f"/proc/{w.pid}/ns/net").st_ino == os.stat(f"/proc/{proxy.pid}/ns/net").st_ino
