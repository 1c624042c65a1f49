"""Launch one unikernel VM under QEMU, watch it boot, pause it, stop it, and find ones left behind.

The master owns SIGCHLD, so QEMU is started with subprocess.Popen (not asyncio's subprocess
machinery, which would install its own child watcher). Its exit status comes either from the
master's ChildReaper, or, standalone, from a pidfd that becomes readable when QEMU exits
followed by waitpid(pid, WNOHANG) on that one pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Literal

import psutil

from ukproxy.protocol import describe_exit
from ukproxy.reaper import ChildReaper
from ukproxy.vm.console import Console
from ukproxy.vm.cpu_pinning import pin_process_tree
from ukproxy.vm.qmp import QmpClient, QmpError
from ukproxy.vm.share import DEFAULT_SHARE_TAG, fsdev_args

log = logging.getLogger("ukproxy.vm")

QEMU_BINARY = "qemu-system-x86_64"
NAME_MARKER = "ukproxy"  # -name ukproxy:<netns>:<vm_id> lets reconcile find our QEMUs after a crash
# QEMU's user-mode network (slirp) puts the guest here; hostfwd forwards to this address.
USER_NET_GUEST = IPv4Interface("10.0.2.15/24")
USER_NET_GATEWAY = IPv4Address("10.0.2.2")
# Seccomp on; no fork/exec, no obsolete syscalls, no affinity/scheduler calls (we pin QEMU from outside).
SANDBOX = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
# QEMU 7.2 installs the filter before -runas calls setuid, so dropping to a user needs "allow"; as that
# user, set*id cannot gain anything back, and spawn=deny rules out exec of a setuid binary.
SANDBOX_AS_ROOT = SANDBOX + ",elevateprivileges=deny"
SANDBOX_RUNAS = SANDBOX + ",elevateprivileges=allow"
# sun_path is 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107
_EXIT_POLL_INTERVAL = 0.05  # seconds; only without pidfd support
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.@-]+")

# The machines a VM can be. pc: the i440FX PC, SeaBIOS and PCI; usb, vmport and smm are devices and
# modes the unikernel never uses. microvm: no PCI and no firmware tables, virtio over MMIO; boots
# sooner and takes less memory. acpi=off: its ACPI offers the guest nothing it uses (no PM timer, no power
# button; the VM is stopped with QMP quit), puts its virtio-mmio interrupts on the PIC's lines 5+, and saves
# 2 MiB of private memory per VM (QEMU's buffer for the ACPI tables, bench.vm_density).
MACHINES = {
    "pc": "pc,usb=off,vmport=off,smm=off",
    "microvm": "microvm,acpi=off",
}

VmState = Literal["new", "booting", "running", "paused", "stopping", "exited"]


class VmBootError(Exception):
    """QEMU did not start, exited, or gave no `ready` line within boot_timeout (the message holds the console tail)."""


@dataclass(frozen=True)
class VmSpec:
    vm_id: str  # e.g. "web-3": the guest's name= and part of QEMU's -name marker
    image: str
    service_args: str  # from VmConfig.args, e.g. "service=httpd"
    ip: IPv4Interface | None
    gateway: IPv4Address | None
    port: int
    memory_mib: int
    accel: str  # "tcg" | "kvm", already resolved (see ukproxy.vm.accel)
    mac: str
    netns: str = "ukproxy"  # the backend namespace of the ukproxy that owns the VM; part of the marker
    tap_fd: int | None = None  # bridge mode: an open TAP fd for QEMU; the caller may close its copy after start()
    hostfwd_port: int | None = None  # user-net fallback: 127.0.0.1:hostfwd_port -> guest port
    cpu: int | None = None  # pin QEMU (all threads) to this CPU after launch
    boot_timeout: float = 10.0
    stop_timeout: float = 3.0
    run_dir: str = "run/vm"  # the QMP socket goes here
    user: str | None = None  # QEMU drops to this user (-runas) once it has opened its files
    share: str | None = None  # a host folder for the guest over virtio-9p (absolute)
    share_writable: bool = False
    share_tag: str = DEFAULT_SHARE_TAG
    machine: str = "microvm"  # a key of MACHINES

    def __post_init__(self) -> None:
        for field_name in ("vm_id", "netns"):
            value = getattr(self, field_name)
            if not _SAFE_NAME.fullmatch(value):
                # these end up in QEMU's comma-separated options and in the guest's space-separated cmdline
                raise ValueError(f"{field_name} {value!r} must be letters, digits, '_', '.', '@' or '-'")
        if self.machine not in MACHINES:
            raise ValueError(f"machine must be one of {', '.join(MACHINES)}, got {self.machine!r}")
        if self.accel not in ("tcg", "kvm"):
            raise ValueError(f"accel must be 'tcg' or 'kvm' (resolve 'auto' with ukproxy.vm.accel), got {self.accel!r}")
        if self.tap_fd is not None and self.hostfwd_port is not None:
            raise ValueError("a VM is either on a TAP (tap_fd) or on user-mode networking (hostfwd_port), not both")
        if self.tap_fd is not None and (self.ip is None or self.gateway is None):
            raise ValueError("a VM on a TAP needs ip and gateway")
        if len(self.qmp_path.encode()) > _UNIX_PATH_MAX:
            raise ValueError(f"QMP socket path {self.qmp_path!r} is too long for a unix socket; use a shorter run_dir")

    @property
    def qemu_name(self) -> str:
        return f"{NAME_MARKER}:{self.netns}:{self.vm_id}"

    @property
    def qmp_path(self) -> str:
        return os.path.join(self.run_dir, f"{self.vm_id}.qmp")

    @property
    def guest_ip(self) -> IPv4Interface:
        return self.ip if self.ip is not None else USER_NET_GUEST

    @property
    def guest_gateway(self) -> IPv4Address:
        return self.gateway if self.gateway is not None else USER_NET_GATEWAY


def kernel_append(spec: VmSpec) -> str:
    append = f"ip={spec.guest_ip.with_prefixlen} gw={spec.guest_gateway} port={spec.port} name={spec.vm_id}"
    if spec.share is not None and spec.share_tag != DEFAULT_SHARE_TAG:
        append += f" share_tag={spec.share_tag}"  # the services look for "share" unless told otherwise
    return f"{append} {spec.service_args}".strip()


def netdev_option(spec: VmSpec) -> str:
    if spec.tap_fd is not None:
        return f"tap,id=n0,fd={spec.tap_fd}"
    # restrict=on: the guest reaches nothing outside; only our hostfwd reaches in.
    option = "user,id=n0,restrict=on"
    if spec.hostfwd_port is not None:
        option += f",hostfwd=tcp:127.0.0.1:{spec.hostfwd_port}-{spec.guest_ip.ip}:{spec.port}"
    return option


def virtio_device(spec: VmSpec, kind: str) -> str:
    """The QEMU device for a virtio `kind` ("net", "9p") on the machine's transport, legacy as the guest drives it."""
    if spec.machine == "microvm":
        return f"virtio-{kind}-device"  # virtio-mmio, legacy by default in QEMU 7.2
    return f"virtio-{kind}-pci,disable-modern=on" + (",romfile=" if kind == "net" else "")  # no option ROM to run


def qemu_command(spec: VmSpec) -> list[str]:
    command = [
        QEMU_BINARY,
        "-name", spec.qemu_name,
        "-machine", MACHINES[spec.machine],
        "-accel", spec.accel,
        "-nodefaults", "-no-user-config", "-display", "none",
        "-sandbox", SANDBOX_RUNAS if spec.user else SANDBOX_AS_ROOT,
        "-m", str(spec.memory_mib),
        "-kernel", spec.image,
        "-append", kernel_append(spec),
        "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", netdev_option(spec),
        "-device", f"{virtio_device(spec, 'net')},netdev=n0,mac={spec.mac}",
        "-qmp", f"unix:{spec.qmp_path},server=on,wait=off",
        "-no-reboot",
    ]  # fmt: skip
    if spec.share is not None:
        command += fsdev_args("share0", spec.share, spec.share_tag, spec.share_writable, virtio_device(spec, "9p"))
    if spec.user:
        command += ["-runas", spec.user]
    return command


_PR_SET_THP_DISABLE = 41


@contextlib.contextmanager
def _huge_pages_off() -> Iterator[None]:
    """Children started inside get no transparent huge pages (the flag is inherited across fork and
    exec). QEMU asks for them on guest RAM and on its code buffer, so that a guest touching one
    byte costs 2 MiB of host memory: about 4 MiB per VM of a mostly idle guest."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        yield  # an old kernel: huge pages it is
        return
    try:
        yield
    finally:
        libc.prctl(_PR_SET_THP_DISABLE, 0, 0, 0, 0)


class QemuVm:
    def __init__(self, spec: VmSpec, reaper: ChildReaper | None = None) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.boot_seconds: float | None = None
        self.state: VmState = "new"
        self._reaper = reaper
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: Console | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pidfd: int | None = None
        self._qmp: QmpClient | None = None
        self._stopping: asyncio.Task[int] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<QemuVm {self.spec.vm_id} pid={self.pid} {self.state}>"

    @property
    def exited(self) -> asyncio.Future[int]:
        """Resolves with QEMU's wait status (os.waitstatus_to_exitcode decodes it)."""
        if self._exited is None:
            raise RuntimeError(f"VM {self.spec.vm_id} has not been started")
        return self._exited

    # -- start ------------------------------------------------------------------------------------

    async def start(self) -> float:
        """Launch QEMU and wait for the guest's `ready` line; return the seconds from exec to ready."""
        if self.state != "new":
            raise RuntimeError(f"VM {self.spec.vm_id} was already started")
        spec = self.spec
        loop = asyncio.get_running_loop()
        os.makedirs(spec.run_dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec.qmp_path)  # a stale socket from a VM of the same id that was SIGKILLed
        self.state = "booting"
        self._exited = loop.create_future()
        read_end, write_end = os.pipe()
        launched = time.monotonic()
        try:
            with _huge_pages_off():
                self._proc = subprocess.Popen(
                    qemu_command(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=write_end,
                    stderr=write_end,  # QEMU's own errors belong in the console tail too
                    pass_fds=() if spec.tap_fd is None else (spec.tap_fd,),
                    start_new_session=True,  # a ^C at the master's terminal is the master's to handle
                )
        except OSError as e:
            os.close(read_end)
            self.state = "exited"
            self._exited.set_result(0x7F00)  # as a shell reports "command not found"
            raise VmBootError(f"VM {spec.vm_id}: cannot run {QEMU_BINARY}: {e}") from e
        finally:
            os.close(write_end)
        self.pid = self._proc.pid
        self._console = Console(read_end)
        self._watch_exit(loop)
        log.info("vm %s: qemu pid %d started (%s, %d MiB)", spec.vm_id, self.pid, spec.accel, spec.memory_mib)
        try:
            if spec.cpu is not None:
                self._pin(spec.cpu)
            await self._wait_ready(launched)
        except BaseException:
            await self._kill_and_reap()
            raise
        assert self._console.ready_at is not None
        self.boot_seconds = self._console.ready_at - launched
        self.state = "running"
        log.info("vm %s: ready in %.3fs", spec.vm_id, self.boot_seconds)
        return self.boot_seconds

    def _pin(self, cpu: int) -> None:
        assert self.pid is not None
        try:
            pin_process_tree(self.pid, cpu)
        except ProcessLookupError:
            pass  # QEMU already exited: _wait_ready reports why
        except OSError as e:
            raise VmBootError(f"VM {self.spec.vm_id}: cannot pin QEMU to CPU {cpu}: {e}") from e

    async def _wait_ready(self, launched: float) -> None:
        assert self._console is not None and self._exited is not None
        remaining = self.spec.boot_timeout - (time.monotonic() - launched)
        ready = self._console.ready_line
        if remaining > 0:
            await asyncio.wait({ready, self._exited}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            return
        if self._exited.done():
            # QEMU's last words may still be in the pipe: read to EOF (bounded) before quoting them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._console.closed), 1.0)
            raise VmBootError(
                f"VM {self.spec.vm_id}: QEMU exited during boot ({describe_exit(self._exited.result())}); "
                f"console:\n{self.console_tail()}"
            )
        raise VmBootError(
            f"VM {self.spec.vm_id}: no ready line within boot_timeout={self.spec.boot_timeout}s; "
            f"console:\n{self.console_tail()}"
        )

    # -- exit -------------------------------------------------------------------------------------

    def _watch_exit(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.pid is not None
        if self._reaper is not None:
            self._reaper.watch(self.pid, self._on_exit)
            return
        # Standalone: the pidfd turns readable when QEMU exits; then reap that one pid.
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:
            self._poll_own_child(loop)  # a kernel without pidfds (before 5.3): poll instead
            return
        loop.add_reader(self._pidfd, self._reap_own_child)

    def _poll_own_child(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reap_own_child()
        if not self.exited.done():
            loop.call_later(_EXIT_POLL_INTERVAL, self._poll_own_child, loop)

    def _reap_own_child(self) -> None:
        assert self.pid is not None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # someone else reaped it (a waitpid(-1) elsewhere); the status is lost
            pid, status = self.pid, 0xFF00
        if pid != 0:
            self._on_exit(status)

    def _on_exit(self, status: int) -> None:
        loop = self.exited.get_loop()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._proc is not None:
            # so Popen never waits on a pid that is no longer ours
            self._proc.returncode = os.waitstatus_to_exitcode(status)
        self.state = "exited"
        if not self.exited.done():
            self.exited.set_result(status)
        if self._qmp is not None:
            task = loop.create_task(self._qmp.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            self._qmp = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spec.qmp_path)
        log.info("vm %s: qemu pid %s exited (%s)", self.spec.vm_id, self.pid, describe_exit(status))

    def kill(self) -> None:
        """SIGKILL QEMU now. Safe against pid reuse: until we reap it, the pid is still ours."""
        if self.pid is not None and self._exited is not None and not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def _kill_and_reap(self) -> None:
        self.kill()
        if self._exited is not None:
            await asyncio.shield(self._exited)

    # -- QMP: stop, pause, resume -----------------------------------------------------------------

    async def _qmp_client(self, timeout: float) -> QmpClient:
        if self._qmp is None or not self._qmp.connected:
            client = QmpClient(self.spec.qmp_path)
            await client.connect(timeout)
            self._qmp = client
        return self._qmp

    async def qmp(self, command: str, arguments: dict | None = None, timeout: float = 5.0) -> object:
        """Run one QMP command on this VM (connecting on first use)."""
        if self.state in ("new", "exited"):
            raise QmpError(f"VM {self.spec.vm_id} is {self.state}")
        client = await self._qmp_client(timeout)
        return await client.execute(command, arguments, timeout)

    async def stop(self) -> int:
        """ACPI power-down, then SIGKILL after stop_timeout; return the wait status. Idempotent."""
        if self._exited is None:
            raise RuntimeError(f"VM {self.spec.vm_id} has not been started")
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        return await asyncio.shield(self._stopping)

    async def _stop(self) -> int:
        assert self._exited is not None
        if self._exited.done():
            return self._exited.result()
        self.state = "stopping"
        deadline = time.monotonic() + self.spec.stop_timeout
        started = time.monotonic()
        try:
            # microvm has no power button the guest drives; its guest keeps nothing that needs a shutdown
            command = "quit" if self.spec.machine == "microvm" else "system_powerdown"
            await self.qmp(command, timeout=max(0.1, self.spec.stop_timeout / 2))
        except QmpError as e:
            log.warning("vm %s: powerdown failed (%s); killing", self.spec.vm_id, e)
            self.kill()
        try:
            status = await asyncio.wait_for(asyncio.shield(self._exited), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("vm %s: still running %.1fs after powerdown; killing", self.spec.vm_id, self.spec.stop_timeout)
            self.kill()
            status = await asyncio.shield(self._exited)
        log.info("vm %s: stopped in %.3fs", self.spec.vm_id, time.monotonic() - started)
        return status

    async def pause(self) -> None:
        """Freeze the guest's CPUs (QMP stop): it keeps its memory and sockets but answers nothing."""
        await self.qmp("stop")
        if self.state == "running":
            self.state = "paused"

    async def resume(self) -> None:
        await self.qmp("cont")
        if self.state == "paused":
            self.state = "running"

    def console_tail(self, lines: int = 20) -> str:
        return self._console.tail(lines) if self._console is not None else ""


def _marked_vm_id(cmdline: list[str], netns: str) -> str | None:
    prefix = f"{NAME_MARKER}:{netns}:"
    for option, value in itertools.pairwise(cmdline):
        if option == "-name" and value.startswith(prefix):
            return value[len(prefix) :]
    return None


def find_leftover_vms(netns: str) -> list[psutil.Process]:
    """QEMU processes whose -name carries our marker for `netns` (for reconcile after a master crash)."""
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if _marked_vm_id(process.info["cmdline"] or [], netns) is not None
    ]


def leftover_vm_id(process: psutil.Process, netns: str) -> str | None:
    """The vm_id in a QEMU process's marker, or None if it is not one of ours for `netns`."""
    try:
        return _marked_vm_id(process.cmdline(), netns)
    except psutil.Error:
        return None
