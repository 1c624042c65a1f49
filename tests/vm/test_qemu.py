"""QemuVm against real QEMU (TCG): boot on a TAP in a private namespace, serve, pin, pause, stop, fail.

Bridge-mode tests need root (namespace, bridge, TAPs); user-net tests need only QEMU.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Interface

import psutil
import pytest

from tests.vm.conftest import curl_in_netns, needs_qemu, needs_root
from ukproxy.reaper import ChildReaper
from ukproxy.vm.console import Console
from ukproxy.vm.cpu_pinning import read_affinity
from ukproxy.vm.qemu import QemuVm, VmBootError, VmSpec, find_leftover_vms, leftover_vm_id, qemu_command

pytestmark = [pytest.mark.qemu, needs_qemu, pytest.mark.timeout(60)]

MakeSpec = Callable[..., VmSpec]
MakeVm = Callable[..., QemuVm]
MakeTapSpec = Callable[..., Awaitable[VmSpec]]


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


# -- the command line -----------------------------------------------------------------------------


def test_command_carries_marker_sandbox_and_tap_fd(user_spec: MakeSpec) -> None:
    spec = user_spec(
        "web-3",
        hostfwd_port=None,
        tap_fd=7,
        ip=IPv4Interface("10.77.0.13/24"),
        gateway=IPv4Address("10.77.0.1"),
        netns="ukproxy",
    )
    argv = qemu_command(spec)
    assert argv[argv.index("-name") + 1] == "ukproxy:ukproxy:web-3"
    assert argv[argv.index("-netdev") + 1] == "tap,id=n0,fd=7"
    assert argv[argv.index("-append") + 1] == "ip=10.77.0.13/24 gw=10.77.0.1 port=80 name=web-3 service=httpd"
    assert "elevateprivileges=deny" in argv[argv.index("-sandbox") + 1]


def test_spec_refuses_what_would_break_options() -> None:
    common = dict(image="x", service_args="", ip=None, gateway=None, port=80, memory_mib=16, mac="52:54:00:00:00:01")
    with pytest.raises(ValueError, match="vm_id"):
        VmSpec(vm_id="a,b", accel="tcg", **common)
    with pytest.raises(ValueError, match="auto"):
        VmSpec(vm_id="a", accel="auto", **common)
    with pytest.raises(ValueError, match="not both"):
        VmSpec(vm_id="a", accel="tcg", tap_fd=3, hostfwd_port=8080, **common)
    with pytest.raises(ValueError, match="too long"):
        VmSpec(vm_id="a", accel="tcg", run_dir="/" + "d" * 120, **common)


def test_a_share_becomes_a_legacy_virtio_9p_device() -> None:
    common = dict(vm_id="web-1", image="x", service_args="", ip=None, gateway=None, port=80, memory_mib=16,
                  accel="tcg", mac="52:54:00:00:00:01")
    argv = qemu_command(VmSpec(share="/srv/a,b", machine="pc", **common))  # type: ignore[arg-type]
    assert argv[argv.index("-fsdev") + 1] == "local,id=share0,path=/srv/a,,b,security_model=none,readonly=on"
    assert "virtio-9p-pci,disable-modern=on,fsdev=share0,mount_tag=share" in argv
    argv = qemu_command(VmSpec(share="/srv/data", share_writable=True, share_tag="data", **common))  # type: ignore[arg-type]
    assert argv[argv.index("-fsdev") + 1] == "local,id=share0,path=/srv/data,security_model=none"
    assert "virtio-9p-device,fsdev=share0,mount_tag=data" in argv  # microvm: virtio-mmio
    assert "share_tag=data" in argv[argv.index("-append") + 1]  # the guest looks for "share" unless told
    assert "-fsdev" not in qemu_command(VmSpec(**common))  # type: ignore[arg-type]


# -- bridge mode ----------------------------------------------------------------------------------


@needs_root
async def test_boots_on_tap_serves_pinned_and_powers_off(tap_spec: MakeTapSpec, vms: MakeVm) -> None:
    cpu = max(os.sched_getaffinity(0))
    spec = await tap_spec("web-0", cpu=cpu)
    vm = vms(spec)
    boot_seconds = await vm.start()
    assert boot_seconds > 0 and vm.boot_seconds == boot_seconds
    assert vm.state == "running"
    assert "ready name=web-0 ip=10.77.0.10 port=80 service=httpd" in vm.console_tail()

    got = await asyncio.to_thread(curl_in_netns, spec.netns, "http://10.77.0.10/health")
    assert got.stdout == "200", got.stderr

    masks = read_affinity(vm.pid)
    assert len(masks) > 1  # QEMU's main, RCU and vCPU threads at least
    assert all(mask == {cpu} for mask in masks.values()), masks

    status = await vm.stop()
    assert exit_code(status) == 0  # the guest powered off by ACPI, not SIGKILL
    assert vm.state == "exited" and vm.exited.result() == status
    assert await vm.stop() == status  # idempotent
    assert not psutil.pid_exists(vm.pid) or psutil.Process(vm.pid).name() != "qemu-system-x86_64"
    assert not os.path.exists(spec.qmp_path)


@needs_root
async def test_paused_vm_ignores_powerdown_and_is_killed(tap_spec: MakeTapSpec, vms: MakeVm) -> None:
    # pc: stop presses the ACPI power button, which a frozen guest cannot act on (microvm quits QEMU)
    vm = vms(await tap_spec("web-1", n=1, stop_timeout=0.5, machine="pc"))
    await vm.start()
    await vm.pause()
    assert vm.state == "paused"
    got = await asyncio.to_thread(curl_in_netns, vm.spec.netns, "http://10.77.0.11/health")
    assert got.stdout != "200"  # frozen: the curl times out
    status = await vm.stop()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert vm.state == "exited"


@needs_root
async def test_leftover_vm_is_found_by_its_marker(tap_spec: MakeTapSpec, vms: MakeVm) -> None:
    vm = vms(await tap_spec("web-2", n=2))
    await vm.start()
    found = find_leftover_vms(vm.spec.netns)
    assert [p.pid for p in found] == [vm.pid]
    assert leftover_vm_id(found[0], vm.spec.netns) == "web-2"
    assert find_leftover_vms(vm.spec.netns + "-other") == []
    await vm.stop()
    assert find_leftover_vms(vm.spec.netns) == []


# -- failures -------------------------------------------------------------------------------------


async def test_missing_image_fails_boot_with_qemu_error(user_spec: MakeSpec, vms: MakeVm) -> None:
    vm = vms(user_spec(image="/nonexistent/httpd.elf"))
    with pytest.raises(VmBootError, match=re.escape("could not open kernel file '/nonexistent/httpd.elf'")):
        await vm.start()
    assert vm.state == "exited"
    assert exit_code(vm.exited.result()) == 1


async def test_bad_guest_args_fail_boot_with_guest_error(user_spec: MakeSpec, vms: MakeVm) -> None:
    vm = vms(user_spec(service_args="service=ftp"))
    with pytest.raises(VmBootError,
                       match=r"error: bad command line: service must be httpd \(this image's service\): ftp"):
        await vm.start()
    assert exit_code(vm.exited.result()) == 3  # isa-debug-exit: (1 << 1) | 1


async def test_boot_timeout_kills_and_reaps_qemu(user_spec: MakeSpec, vms: MakeVm) -> None:
    # Our unikernels are ready about 25 ms after QEMU starts, even under TCG; QEMU alone needs longer than
    # 1 ms to start, so no boot can meet this one.
    vm = vms(user_spec(boot_timeout=0.001))
    with pytest.raises(VmBootError, match=re.escape("no ready line within boot_timeout=0.001s")):
        await vm.start()
    assert vm.state == "exited" and vm.exited.done()  # reaped, not a zombie
    assert find_leftover_vms(vm.spec.netns) == []


# -- user-mode networking -------------------------------------------------------------------------


async def test_user_net_forwards_a_loopback_port(user_spec: MakeSpec, vms: MakeVm) -> None:
    spec = user_spec("user-1")
    vm = vms(spec)
    await vm.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", spec.hostfwd_port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    head = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert exit_code(await vm.stop()) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
async def test_runs_as_the_given_user(user_spec: MakeSpec, vms: MakeVm) -> None:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' here")
    vm = vms(user_spec("user-2", user="nobody"))
    await vm.start()
    assert psutil.Process(vm.pid).username() == "nobody"
    assert exit_code(await vm.stop()) == 0  # QMP still works: the socket was made before the switch


# -- reaping --------------------------------------------------------------------------------------


async def test_master_reaper_delivers_the_exit_status(user_spec: MakeSpec, vms: MakeVm) -> None:
    loop = asyncio.get_running_loop()
    reaper = ChildReaper()
    reaper.install(loop)
    try:
        vm = vms(user_spec("user-3"), reaper=reaper)
        await vm.start()
        vm.kill()
        status = await asyncio.wait_for(vm.exited, 10)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert vm.state == "exited"
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)


def test_popen_of_others_is_unaffected_without_reaper() -> None:
    # the standalone watcher reaps only its own pid (a pidfd, then waitpid(pid)), never waitpid(-1)
    assert subprocess.run(["true"]).returncode == 0


async def test_standalone_poll_fallback_without_pidfd(
    user_spec: MakeSpec, vms: MakeVm, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    vm = vms(user_spec("user-4"))
    await vm.start()
    assert exit_code(await vm.stop()) == 0


async def test_pause_and_resume_follow_the_guest(user_spec: MakeSpec, vms: MakeVm) -> None:
    vm = vms(user_spec("user-5"))
    await vm.start()
    await vm.pause()
    assert vm.state == "paused"
    assert (await vm.qmp("query-status"))["status"] == "paused"
    await vm.resume()
    assert vm.state == "running"
    assert (await vm.qmp("query-status"))["status"] == "running"
    vm.kill()
    vm.kill()  # a second kill, and one after the exit, are harmless
    status = await vm.exited
    vm.kill()
    assert os.WTERMSIG(status) == signal.SIGKILL
    assert await vm.stop() == status  # stop on an exited VM just reports


# -- the console ring -----------------------------------------------------------------------------


async def test_console_keeps_recent_lines_and_spots_ready() -> None:
    read_end, write_end = os.pipe()
    console = Console(read_end, keep_lines=3)
    os.write(write_end, b"boot\r\nnet up\r\nready name=x\npart")
    ready = await asyncio.wait_for(console.ready_line, 5)
    assert ready == "ready name=x"
    assert console.tail(2) == "ready name=x\npart"  # an unfinished line counts
    os.write(write_end, b"ial\nmore\nlast\n")
    os.close(write_end)
    await asyncio.wait_for(console.closed, 5)
    assert console.tail() == "partial\nmore\nlast"  # only keep_lines are kept
    assert console.tail(0) == ""
