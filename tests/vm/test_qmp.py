"""QmpClient against real QEMU (user-mode network, no root): status, stop/cont, errors, powerdown."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.vm.conftest import needs_qemu
from ukproxy.vm.qemu import QemuVm, VmSpec, qemu_command
from ukproxy.vm.qmp import QmpClient, QmpError

pytestmark = [pytest.mark.qemu, needs_qemu, pytest.mark.timeout(60)]


async def test_status_stop_cont_and_errors(user_spec: Callable[..., VmSpec], vms: Callable[..., QemuVm]) -> None:
    vm = vms(user_spec("qmp-0"))
    await vm.start()
    client = QmpClient(vm.spec.qmp_path)
    await client.connect()
    try:
        assert "qemu" in client.greeting["QMP"]["version"]
        assert (await client.execute("query-status"))["status"] == "running"
        assert await client.execute("stop") == {}
        assert (await client.execute("query-status"))["status"] == "paused"
        await client.execute("cont")
        assert (await client.execute("query-status"))["running"] is True
        with pytest.raises(QmpError, match="CommandNotFound"):
            await client.execute("no-such-command")
        assert any(e["event"] == "STOP" for e in client.events)
        assert any(e["event"] == "RESUME" for e in client.events)
    finally:
        await client.close()


async def test_powerdown_makes_qemu_exit_cleanly(user_spec: Callable[..., VmSpec], vms: Callable[..., QemuVm]) -> None:
    vm = vms(user_spec("qmp-1", machine="pc"))   # the ACPI power button: microvm has none (it is stopped by quit)
    await vm.start()
    client = QmpClient(vm.spec.qmp_path)
    await client.connect()
    try:
        await client.execute("system_powerdown")
        status = await asyncio.wait_for(vm.exited, 20)
    finally:
        await client.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert any(e["event"] == "POWERDOWN" for e in client.events)


async def test_connect_waits_for_the_socket_to_appear(user_spec: Callable[..., VmSpec]) -> None:
    spec = user_spec("qmp-2")
    client = QmpClient(spec.qmp_path)
    connecting = asyncio.ensure_future(client.connect(timeout=20))
    await asyncio.sleep(0.2)  # connect is retrying: the socket does not exist yet
    assert not connecting.done()
    proc = subprocess.Popen(
        qemu_command(spec), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await connecting
        assert (await client.execute("query-status"))["status"] in ("running", "prelaunch")
        await client.execute("quit")
    finally:
        await client.close()
        proc.kill()
        proc.wait()


async def test_connect_gives_up_after_its_timeout(tmp_path: Path) -> None:
    client = QmpClient(str(tmp_path / "never.qmp"))
    with pytest.raises(QmpError, match=r"not ready within 0\.2s"):
        await client.connect(timeout=0.2)
    assert not client.connected


async def test_execute_after_qemu_is_gone_is_an_error(
    user_spec: Callable[..., VmSpec], vms: Callable[..., QemuVm]
) -> None:
    vm = vms(user_spec("qmp-3"))
    await vm.start()
    client = QmpClient(vm.spec.qmp_path)
    await client.connect()
    try:
        vm.kill()
        await vm.exited
        with pytest.raises(QmpError):
            for _ in range(100):  # the receiver notices EOF asynchronously
                await client.execute("query-status", timeout=1)
                await asyncio.sleep(0.01)
    finally:
        await client.close()
