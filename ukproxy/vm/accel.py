"""`accel = "auto"`: find out once whether KVM really runs our guest at speed, else use TCG.

/dev/kvm existing is not enough: under nested virtualisation KVM may run a guest far slower than
TCG, or fail on it outright ("KVM internal error"). So the probe boots the real image under TCG,
then under KVM with a short deadline, and keeps KVM only if it reached `ready` and was not slower
than TCG by more than KVM_SLOWDOWN_ALLOWED. The KVM attempt is killed at its deadline.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace

from ukproxy.config import VmConfig
from ukproxy.reaper import ChildReaper
from ukproxy.vm.qemu import QemuVm, VmBootError, VmSpec

log = logging.getLogger("ukproxy.vm")

KVM_DEVICE = "/dev/kvm"
KVM_SLOWDOWN_ALLOWED = 1.5  # boot times are ~0.1 s and noisy on a busy host: do not demand KVM win
KVM_DEADLINE_MIN = 1.0  # seconds; the deadline is max(this, KVM_DEADLINE_TCG_MULTIPLE x TCG's time)
KVM_DEADLINE_TCG_MULTIPLE = 4.0
TCG_DEADLINE = 10.0


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "tcg" | "kvm"
    reason: str
    kvm_seconds: float | None  # exec to ready under KVM; None when not tried or not ready in time
    tcg_seconds: float | None  # exec to ready under TCG; None when not measured (KVM unusable anyway)


def kvm_unusable_reason(device: str = KVM_DEVICE) -> str | None:
    """Why KVM cannot be used at all (missing or not openable), or None if it can be tried."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{device} cannot be opened: {e.strerror}"
    os.close(fd)
    return None


def _probe_spec(image: str, accel: str, boot_timeout: float, run_dir: str, netns: str,
                like: VmConfig | None = None) -> VmSpec:
    # user-mode network with restrict=on and no forwards: the guest needs a NIC to come up, nothing more
    spec = VmSpec(
        vm_id=f"accel-probe-{accel}",
        image=image,
        service_args="",  # the image runs its own service; the probe only waits for `ready`
        ip=None,
        gateway=None,
        port=7,
        memory_mib=16,
        accel=accel,
        mac="52:54:00:ff:ff:fe",
        netns=netns,
        boot_timeout=boot_timeout,
        stop_timeout=0.5,
        run_dir=run_dir,
    )
    if like is None:
        return spec
    # the machine and the share of the VMs it stands for: a service that serves a share needs it to start
    return replace(spec, machine=like.machine, share=like.share, share_tag=like.share_tag)


async def _time_boot(spec: VmSpec, reaper: ChildReaper | None) -> tuple[float | None, str]:
    """Seconds from exec to ready (None if it failed) and what went wrong; the VM is always gone after."""
    vm = QemuVm(spec, reaper)
    try:
        seconds = await vm.start()
    except VmBootError as e:
        return None, _failure_summary(vm.console_tail(10)) or str(e).splitlines()[0]
    vm.kill()  # a probe needs no clean shutdown
    await vm.exited
    return seconds, ""


def _failure_summary(console: str) -> str:
    """The console line that best says why a boot failed: an error if there is one, else the last line."""
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0 if errors else -1][:200]


async def probe_accel(
    image: str,
    *,
    reaper: ChildReaper | None = None,
    netns: str = "ukproxy",
    kvm_device: str = KVM_DEVICE,
    like: VmConfig | None = None,
) -> AccelChoice:
    """Boot `image` under TCG, then KVM (bounded), and choose. Pass the master's reaper when it has one.

    Raises VmBootError if the image does not boot under TCG either: then no accelerator helps.
    """
    unusable = kvm_unusable_reason(kvm_device)
    if unusable is not None:
        return _chosen(AccelChoice("tcg", f"{unusable}; using TCG without probing", None, None))
    run_dir = tempfile.mkdtemp(prefix="ukproxy-accel-")
    try:
        tcg_seconds, tcg_error = await _time_boot(_probe_spec(image, "tcg", TCG_DEADLINE, run_dir, netns, like), reaper)
        if tcg_seconds is None:
            raise VmBootError(f"accel probe: {image} does not boot under TCG: {tcg_error}")
        deadline = max(KVM_DEADLINE_MIN, KVM_DEADLINE_TCG_MULTIPLE * tcg_seconds)
        kvm_seconds, kvm_error = await _time_boot(_probe_spec(image, "kvm", deadline, run_dir, netns, like), reaper)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return _chosen(decide(tcg_seconds, kvm_seconds, f"no ready line within {deadline:.1f}s ({kvm_error})"))


def decide(tcg_seconds: float, kvm_seconds: float | None, kvm_failure: str = "no ready line") -> AccelChoice:
    """KVM only if it booted and was not slower than TCG by more than KVM_SLOWDOWN_ALLOWED."""
    figures = f"tcg ready in {tcg_seconds:.3f}s"
    if kvm_seconds is None:
        return AccelChoice("tcg", f"kvm failed: {kvm_failure}; {figures}", None, tcg_seconds)
    figures = f"kvm ready in {kvm_seconds:.3f}s, {figures}"
    if kvm_seconds > KVM_SLOWDOWN_ALLOWED * tcg_seconds:
        return AccelChoice("tcg", f"kvm is slower than tcg: {figures}", kvm_seconds, tcg_seconds)
    return AccelChoice("kvm", f"kvm runs the guest at speed: {figures}", kvm_seconds, tcg_seconds)


def _chosen(choice: AccelChoice) -> AccelChoice:
    log.info("accel auto: %s (%s)", choice.accel, choice.reason)
    return choice


async def resolve_accel(
    configured: str, image: str, *, reaper: ChildReaper | None = None, netns: str = "ukproxy"
) -> AccelChoice:
    """ "tcg"/"kvm" as configured (no probe); "auto" probes. The master calls this once per start."""
    if configured in ("tcg", "kvm"):
        return AccelChoice(configured, "configured", None, None)
    if configured != "auto":
        raise ValueError(f"accel must be auto, tcg or kvm, got {configured!r}")
    return await probe_accel(image, reaper=reaper, netns=netns)
