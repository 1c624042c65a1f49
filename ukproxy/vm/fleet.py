"""The master's VM fleet: the backend network, addresses, placement, and every QEMU process.

Workers own their pools but hold no privileges; they ask the master (over their control channel)
to boot or stop a VM, and the master tells them when one of their VMs dies. VMs belong to a worker
*slot*, not a pid, so a respawned or reloaded worker in the same slot adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from ukproxy import metrics
from ukproxy.config import Config, UpstreamConfig, VmConfig
from ukproxy.protocol import VmInfo
from ukproxy.reaper import ChildReaper
from ukproxy.vm.placement.host import host_nodes
from ukproxy.vm.qemu import QemuVm, VmBootError, VmSpec, find_leftover_vms
from ukproxy.vm.scheduler import (
    AntiAffinity,
    Placement,
    Scheduler,
    SchedulerConfig,
    ScoreWeights,
    Unschedulable,
    VmRequest,
)
from ukproxy.vm.spare_tap import SpareTap

log = logging.getLogger("ukproxy.fleet")


@dataclass
class FleetVm:
    vm_id: str
    upstream: str
    slot: int
    host: str  # the address workers connect to
    port: int
    cpu: int | None
    qemu: QemuVm
    tap: str | None = None
    ip: ipaddress.IPv4Address | None = None
    started_at: float = field(default_factory=time.monotonic)
    boot_seconds: float | None = None
    stopping: bool = False
    retiring: bool = False  # its upstream left or changed at a reload: stopped once old workers drained
    placement: Placement | None = None  # why it went where it went

    def describe(self) -> VmInfo:
        """What a worker needs to know about the VM."""
        return VmInfo(self.vm_id, self.upstream, self.host, self.port, self.cpu, self.boot_seconds)


def scheduler_config(config: Config) -> SchedulerConfig:
    return SchedulerConfig(weights=ScoreWeights(**dict(config.score_weights)))


def placement_row(placement: Placement | None) -> dict[str, object] | None:
    """Why a VM went where it went, for /status: each CPU's weighted total and every plugin's score, and
    the CPUs a filter refused, with the reason."""
    if placement is None:
        return None
    return {
        "summary": placement.describe(),
        "scores": {str(cpu): {"total": s.total, **s.by_plugin} for cpu, s in sorted(placement.scores.items())},
        "rejected": {str(r.cpu): f"{r.plugin}: {r.reason}" for r in placement.rejections},
    }


class FleetConfigError(Exception):
    pass


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root() -> bool:
    return os.geteuid() == 0


class Fleet:
    """Boots, tracks and stops the VMs of every VM-backed upstream."""

    def __init__(self, config: Config, reaper: ChildReaper, run_dir: str):
        self.config = config
        self.reaper = reaper
        self.run_dir = run_dir
        self.vms: dict[str, FleetVm] = {}
        self.ids = itertools.count(1)
        self.mode = "none"  # "bridge", "user", or "none" when no upstream is VM-backed
        self.network = None
        self.addresses = None
        self.accel: str | None = None
        self.vm_user: str | None = None  # QEMU runs as this user once started (None: as we run)
        self.scheduler: Scheduler | None = None
        self.spare_tap: SpareTap | None = None  # bridge mode: the next VM's TAP, made ahead
        self.on_vm_exit: Callable[[FleetVm, int], None] = lambda vm, status: None
        self.replacements = 0  # VMs that died unasked (their workers replace them)
        self.closing = False
        self.launching: set[asyncio.Task[FleetVm]] = set()
        self.boots = 0
        self.boot_failures = 0

    @property
    def netns(self) -> str | None:
        return self.config.network.netns if self.mode == "bridge" else None

    def vm_upstreams(self) -> list[UpstreamConfig]:
        return [u for u in self.config.upstreams if u.vm is not None]

    # start and stop

    async def start(self) -> None:
        if not self.vm_upstreams():
            return
        self.mode = self._choose_mode()
        self._kill_leftover_qemu()
        if self.mode == "bridge":
            from bridge import AddressAllocator, BackendNetwork, reconcile_async

            net = self.config.network
            self.network = BackendNetwork(netns=net.netns, bridge=net.bridge, subnet=str(net.subnet))
            removed = await reconcile_async(self.network, keep_taps=set())
            if removed:
                log.warning("removed %d TAPs left by an earlier master: %s", len(removed), ", ".join(removed))
            self.addresses = AddressAllocator(net.subnet, reserved=(self.network.gateway.ip,))
            self.spare_tap = SpareTap(self.network)
            self.spare_tap.prepare()
            log.info("backend network: namespace %s, bridge %s, gateway %s",
                     net.netns, net.bridge, self.network.gateway)
        self.accel = await self._choose_accel()
        cpus = sorted(os.sched_getaffinity(0))
        per_cpu_memory = psutil.virtual_memory().total // (1024 * 1024) // max(1, len(cpus))
        max_vms = max(u.vm.max_per_cpu for u in self.vm_upstreams())  # type: ignore[union-attr]
        self.scheduler = Scheduler(host_nodes(max_vms, per_cpu_memory), scheduler_config(self.config))

    def _choose_mode(self) -> str:
        wanted = self.config.network.mode
        if wanted == "user":
            return "user"
        if is_root():
            return "bridge"
        if wanted == "bridge":
            raise PermissionError("network.mode = \"bridge\" needs root (namespace, bridge and TAPs)")
        log.warning("not root: VMs use QEMU user networking on loopback ports instead of TAPs on a bridge")
        return "user"

    def _kill_leftover_qemu(self) -> None:
        """QEMU processes left by a master that was SIGKILLed (found by the marker in their -name)."""
        for proc in find_leftover_vms(self.config.network.netns):
            log.warning("killing QEMU pid %d left by an earlier master", proc.pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                proc.wait(5)

    async def _choose_accel(self) -> str:
        wanted = {u.vm.accel for u in self.vm_upstreams()}  # type: ignore[union-attr]
        if wanted <= {"tcg", "kvm"} and len(wanted) == 1:
            return wanted.pop()
        from ukproxy.vm.accel import probe_accel

        # Probe like a pool whose VMs share nothing writable: a probe must never write another VM's state.
        candidates = [u.vm for u in self.vm_upstreams() if u.vm is not None]
        first = next((vm for vm in candidates if not vm.share_writable), candidates[0])
        choice = await probe_accel(first.image, reaper=self.reaper, netns=self.config.network.netns, like=first)
        return choice.accel

    async def shutdown(self) -> None:
        self.closing = True
        # Boots in flight finish first (a VM must not come up after the fleet was emptied).
        await asyncio.gather(*self.launching, return_exceptions=True)
        await asyncio.gather(*(self.stop(vm_id) for vm_id in list(self.vms)), return_exceptions=True)
        if self.spare_tap is not None:
            await self.spare_tap.close()
        if self.network is not None:
            with contextlib.suppress(Exception):
                await self.network.down_async()
            log.info("backend network removed")

    # one VM

    async def boot(self, upstream_name: str, slot: int, worker_cpu: int | None) -> FleetVm:
        upstream = self.config.upstream(upstream_name)
        vm_config = upstream.vm
        if vm_config is None or self.scheduler is None:
            raise VmBootError(f"upstream {upstream_name} has no [vm] section")
        if self.closing:
            raise VmBootError("ukproxy is stopping")
        number = next(self.ids)
        vm_id = f"{upstream_name}-{number}"
        rules = upstream.placement
        request = VmRequest(upstream=upstream_name, memory_mib=vm_config.memory_mib,
                            worker=worker_cpu if worker_cpu is not None else 0,
                            required_cpus=frozenset(rules.cpus) if rules.cpus is not None else None,
                            anti_affinity=AntiAffinity(rules.anti_affinity), near=rules.near)
        try:
            placement = self.scheduler.place(request, vm_id)
        except Unschedulable as e:
            raise VmBootError(f"no CPU can take VM {vm_id}: {e}") from None
        log.info("placing %s: %s", vm_id, placement.describe())
        metrics.placement(placement.cpu)
        metrics.vm_state_changed(upstream_name, slot, None, "booting")
        launch = asyncio.ensure_future(self._launch(vm_id, number, upstream_name, slot, placement.cpu, vm_config))
        self.launching.add(launch)
        try:
            vm = await asyncio.shield(launch)
        except BaseException:
            with contextlib.suppress(KeyError):
                self.scheduler.release(vm_id)
            self.boot_failures += 1
            metrics.vm_state_changed(upstream_name, slot, "booting", None)
            raise
        finally:
            self.launching.discard(launch)
        self.boots += 1
        vm.placement = placement
        metrics.vm_booted(upstream_name, vm.boot_seconds or 0.0)
        metrics.vm_state_changed(upstream_name, slot, "booting", "running")
        if self.closing:
            await self.stop(vm_id)
            raise VmBootError("ukproxy is stopping")
        return vm

    async def _launch(self, vm_id: str, number: int, upstream: str, slot: int, cpu: int,
                      vm_config: VmConfig) -> FleetVm:
        tap = ip = tap_fd = None
        try:
            if self.mode == "bridge":
                from bridge import mac_for, open_tap

                assert self.network is not None and self.addresses is not None
                ip = self.addresses.allocate()
                assert self.spare_tap is not None
                tap = await self.spare_tap.take()
                tap_fd = open_tap(self.network.netns, tap)
                spec = VmSpec(
                    vm_id=vm_id, image=vm_config.image, service_args=vm_config.kernel_args(),
                    ip=ipaddress.IPv4Interface(f"{ip}/{self.config.network.subnet.prefixlen}"),
                    gateway=self.network.gateway.ip, port=vm_config.port, memory_mib=vm_config.memory_mib,
                    accel=self.accel or "tcg", mac=mac_for(ip), tap_fd=tap_fd, cpu=cpu,
                    boot_timeout=vm_config.boot_timeout, stop_timeout=vm_config.stop_timeout,
                    run_dir=self.run_dir, netns=self.config.network.netns, user=self.vm_user,
                    share=vm_config.share, share_writable=vm_config.share_writable, share_tag=vm_config.share_tag,
                    machine=vm_config.machine,
                )
                host, port = str(ip), vm_config.port
            else:
                # User networking: QEMU forwards a loopback port to the guest; no root needed.
                hostfwd = free_loopback_port()
                spec = VmSpec(
                    vm_id=vm_id, image=vm_config.image, service_args=vm_config.kernel_args(),
                    ip=ipaddress.IPv4Interface("10.0.2.15/24"), gateway=ipaddress.IPv4Address("10.0.2.2"),
                    port=vm_config.port, memory_mib=vm_config.memory_mib, accel=self.accel or "tcg",
                    mac="52:54:00:12:34:56", hostfwd_port=hostfwd, cpu=cpu,
                    boot_timeout=vm_config.boot_timeout, stop_timeout=vm_config.stop_timeout,
                    run_dir=self.run_dir, netns=self.config.network.netns,
                    share=vm_config.share, share_writable=vm_config.share_writable, share_tag=vm_config.share_tag,
                    machine=vm_config.machine,
                )
                host, port = "127.0.0.1", hostfwd
            qemu = QemuVm(spec, self.reaper)
            vm = FleetVm(vm_id, upstream, slot, host, port, cpu, qemu, tap=tap, ip=ip)
            vm.boot_seconds = await qemu.start()
        except BaseException:
            if tap_fd is not None:
                os.close(tap_fd)
            await self._release_network(tap, ip)
            raise
        if tap_fd is not None:
            os.close(tap_fd)  # QEMU has its own copy
        self.vms[vm_id] = vm
        self._watch_exit(vm)
        log.info("VM %s up: %s:%d on CPU %s, pid %d, ready in %.0f ms",
                 vm_id, host, port, cpu, qemu.pid, (vm.boot_seconds or 0) * 1000)
        return vm

    def _watch_exit(self, vm: FleetVm) -> None:
        def exited(fut: asyncio.Future[int]) -> None:
            status = fut.result() if not fut.cancelled() else -1
            asyncio.get_running_loop().create_task(self._vm_exited(vm, status))

        vm.qemu.exited.add_done_callback(exited)

    async def _vm_exited(self, vm: FleetVm, status: int) -> None:
        if self.vms.pop(vm.vm_id, None) is None:
            return
        metrics.vm_state_changed(vm.upstream, vm.slot, "running", None)
        if self.scheduler is not None:
            with contextlib.suppress(KeyError):
                self.scheduler.release(vm.vm_id)
        await self._release_network(vm.tap, vm.ip)
        if not vm.stopping:
            log.error("VM %s (pid %d) died: status %d; console:\n%s",
                      vm.vm_id, vm.qemu.pid, status, vm.qemu.console_tail(10))
            metrics.vm_replaced(vm.upstream, "died")
            self.replacements += 1
            self.on_vm_exit(vm, status)

    async def _release_network(self, tap: str | None, ip: ipaddress.IPv4Address | None) -> None:
        if tap is not None and self.network is not None:
            with contextlib.suppress(Exception):
                await self.network.remove_tap_async(tap)
        if ip is not None and self.addresses is not None:
            self.addresses.release(ip)

    async def stop(self, vm_id: str) -> None:
        vm = self.vms.get(vm_id)
        if vm is None:
            return
        vm.stopping = True
        await vm.qemu.stop()
        await self._vm_exited(vm, 0)
        log.info("VM %s stopped", vm_id)

    def owned_by(self, slot: int, upstreams: set[str] | None = None) -> list[FleetVm]:
        return [vm for vm in self.vms.values()
                if vm.slot == slot and not vm.stopping and not vm.retiring
                and (upstreams is None or vm.upstream in upstreams)]

    def status_rows(self) -> list[dict[str, object]]:
        """One row per VM for /status (per-connection figures live in the workers' pools)."""
        now = time.monotonic()
        return [{
            "id": vm.vm_id, "upstream": vm.upstream, "worker": vm.slot, "cpu": vm.cpu,
            "address": f"{vm.host}:{vm.port}", "pid": vm.qemu.pid,
            "state": "stopping" if vm.stopping else "retiring" if vm.retiring else vm.qemu.state,
            "active": None, "requests": None,  # these and the last health check: from the workers' metrics
            "uptime": round(now - vm.started_at, 1), "boot_ms": round((vm.boot_seconds or 0) * 1000, 1),
            "placement": placement_row(vm.placement),
        } for vm in self.vms.values()]

    # reload

    def check_reconfigure(self, new: Config) -> None:
        """Raise FleetConfigError when `new` cannot be taken without a restart."""
        if self.mode != "none" and new.network != self.config.network:
            raise FleetConfigError(f"{new.path}: network: the backend network cannot change on reload; restart ukproxy")

    async def reconfigure(self, new: Config) -> list[str]:
        """Take `new`: VMs of unchanged upstreams stay (new workers adopt them; pools resize themselves);
        VMs whose upstream is gone or whose [vm] changed retire. Returns the retiring VM ids."""
        self.check_reconfigure(new)
        old = self.config
        retiring = []
        for vm in self.vms.values():
            new_upstream = next((u for u in new.upstreams if u.name == vm.upstream), None)
            old_upstream = next((u for u in old.upstreams if u.name == vm.upstream), None)
            if new_upstream is None or old_upstream is None or new_upstream.vm != old_upstream.vm:
                vm.retiring = True
                retiring.append(vm.vm_id)
        self.config = new
        if self.scheduler is not None and new.score_weights != old.score_weights:
            self.scheduler = Scheduler(self.scheduler.snapshot(), scheduler_config(new))  # the VMs stay bound
        if self.mode == "none" and self.vm_upstreams():
            await self.start()
        return retiring

    async def stop_retired(self) -> None:
        await asyncio.gather(*(self.stop(vm.vm_id) for vm in list(self.vms.values()) if vm.retiring),
                             return_exceptions=True)
