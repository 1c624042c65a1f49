"""accel = "auto": the probe boots the real image under TCG and (bounded) KVM, and picks TCG here."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.vm.conftest import needs_qemu
from ukproxy.vm.accel import KVM_SLOWDOWN_ALLOWED, decide, kvm_unusable_reason, probe_accel, resolve_accel
from ukproxy.vm.qemu import VmBootError, find_leftover_vms


@pytest.mark.parametrize(
    ("tcg", "kvm", "chosen"),
    [
        (0.1, None, "tcg"),  # never reached ready (nested KVM here)
        (0.1, 0.05, "kvm"),
        (0.1, 0.1 * KVM_SLOWDOWN_ALLOWED, "kvm"),
        (0.1, 0.1 * KVM_SLOWDOWN_ALLOWED + 0.001, "tcg"),
        (0.1, 60.0, "tcg"),
    ],
)
def test_decide_keeps_kvm_only_when_not_much_slower(tcg: float, kvm: float | None, chosen: str) -> None:
    choice = decide(tcg, kvm)
    assert choice.accel == chosen
    assert (choice.tcg_seconds, choice.kvm_seconds) == (tcg, kvm)
    assert f"tcg ready in {tcg:.3f}s" in choice.reason


def test_missing_kvm_device_is_unusable() -> None:
    assert "cannot be opened" in (kvm_unusable_reason("/nonexistent/kvm") or "")


async def test_missing_kvm_means_tcg_without_probing() -> None:
    choice = await probe_accel("/nonexistent/image.elf", kvm_device="/nonexistent/kvm")
    assert choice.accel == "tcg"
    assert choice.kvm_seconds is None and choice.tcg_seconds is None  # nothing was booted
    assert "/nonexistent/kvm" in choice.reason


async def test_configured_accel_is_not_probed() -> None:
    choice = await resolve_accel("kvm", "/nonexistent/image.elf")
    assert (choice.accel, choice.reason) == ("kvm", "configured")
    with pytest.raises(ValueError, match="auto, tcg or kvm"):
        await resolve_accel("hvf", "/nonexistent/image.elf")


@needs_qemu
@pytest.mark.qemu
@pytest.mark.timeout(60)
async def test_probe_chooses_tcg_unless_kvm_is_fast(image: str) -> None:
    marker = f"ukt-qemu-{secrets.token_hex(4)}"
    choice = await resolve_accel("auto", image, netns=marker)
    assert choice.accel in ("tcg", "kvm")
    assert choice.reason
    if kvm_unusable_reason() is None:
        assert choice.tcg_seconds is not None and choice.tcg_seconds > 0
    if choice.kvm_seconds is None or (
        choice.tcg_seconds is not None and choice.kvm_seconds > KVM_SLOWDOWN_ALLOWED * choice.tcg_seconds
    ):
        assert choice.accel == "tcg"
    if os.path.exists("/dev/kvm") and choice.kvm_seconds is None:
        assert "kvm" in choice.reason
    assert find_leftover_vms(marker) == []  # the bounded KVM attempt was killed and reaped


@needs_qemu
@pytest.mark.qemu
async def test_image_that_boots_nowhere_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.elf"
    broken.write_bytes(b"not a kernel")
    # /dev/null opens read-write, so the probe goes ahead as if KVM were present
    with pytest.raises(VmBootError, match="does not boot under TCG"):
        await probe_accel(str(broken), kvm_device="/dev/null")
