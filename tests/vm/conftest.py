"""Fixtures for tests that boot real QEMU VMs: the unikernel image, a private backend network, spec makers.

Everything a test creates is removed in finalizers, also when the test fails: VMs are SIGKILLed
and reaped, TAP fds closed, and the namespace (with its bridge and TAPs) deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from bridge import BackendNetwork, mac_for, open_tap, tap_name
from tests.running import free_port
from ukproxy.vm.qemu import QEMU_BINARY, QemuVm, VmSpec

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "unikernels" / "build" / "httpd.elf"

needs_qemu = pytest.mark.skipif(shutil.which(QEMU_BINARY) is None, reason=f"{QEMU_BINARY} is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces, bridges and TAPs")


@pytest.fixture(scope="session")
def image() -> str:
    proc = subprocess.run(["make", "-C", str(REPO / "unikernels")], capture_output=True, text=True)
    if proc.returncode != 0 or not IMAGE.exists():
        pytest.fail(f"make -C unikernels failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return str(IMAGE)


@pytest.fixture
def user_spec(image: str, tmp_path: Path) -> Callable[..., VmSpec]:
    """A VM on QEMU's user-mode network (no root needed), forwarded from a free loopback port."""

    def make(vm_id: str = "user-0", **changes: Any) -> VmSpec:
        spec = VmSpec(
            vm_id=vm_id,
            image=image,
            service_args="service=httpd",
            ip=None,
            gateway=None,
            port=80,
            memory_mib=16,
            accel="tcg",
            mac="52:54:00:00:00:02",
            netns=f"ukt-qemu-{secrets.token_hex(4)}",  # only a marker here: no namespace is made
            hostfwd_port=free_port(),
            boot_timeout=20.0,
            run_dir=str(tmp_path),
        )
        return replace(spec, **changes)

    return make


@pytest.fixture
async def vms() -> AsyncIterator[Callable[[VmSpec], QemuVm]]:
    """Makes QemuVm objects and SIGKILLs and reaps any still running at the end."""
    made: list[QemuVm] = []

    def make(spec: VmSpec, **kwargs: Any) -> QemuVm:
        vm = QemuVm(spec, **kwargs)
        made.append(vm)
        return vm

    yield make
    for vm in made:
        if vm.state != "new":
            vm.kill()
            await vm.exited


@pytest.fixture(scope="module")
def backend_network() -> Iterator[BackendNetwork]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, bridges and TAPs")
    network = BackendNetwork(netns=f"ukt-qemu-{secrets.token_hex(4)}", bridge="ukbr0", subnet="10.77.0.0/24")
    try:
        network.up()
        yield network
    finally:
        try:
            network.down()
        finally:
            subprocess.run(["ip", "netns", "delete", network.netns], capture_output=True)


@pytest.fixture
def tap_spec(image: str, tmp_path: Path, backend_network: BackendNetwork) -> Iterator[Callable[..., Awaitable[VmSpec]]]:
    """A VM on its own TAP on the bridge, at 10.77.0.<10 + n>; the TAP fd is closed and the TAP removed after."""
    opened: list[tuple[int, str]] = []

    async def make(vm_id: str = "web-0", n: int = 0, **changes: Any) -> VmSpec:
        tap = tap_name(1000 + n)
        await backend_network.add_tap_async(tap)
        fd = open_tap(backend_network.netns, tap)
        opened.append((fd, tap))
        address = IPv4Address("10.77.0.10") + n
        spec = VmSpec(
            vm_id=vm_id,
            image=image,
            service_args="service=httpd",
            ip=IPv4Interface(f"{address}/24"),
            gateway=backend_network.gateway.ip,
            port=80,
            memory_mib=16,
            accel="tcg",
            mac=mac_for(address),
            netns=backend_network.netns,
            tap_fd=fd,
            boot_timeout=20.0,
            run_dir=str(tmp_path),
        )
        return replace(spec, **changes)

    yield make
    for fd, tap in opened:
        os.close(fd)
        with contextlib.suppress(Exception):
            backend_network.remove_tap(tap)


def curl_in_netns(netns: str, url: str) -> subprocess.CompletedProcess[str]:
    """GET `url` from inside the namespace; stdout is the HTTP status code."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
