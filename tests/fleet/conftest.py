"""Fixtures for tests that run ukproxy with real unikernel VMs on TAPs in a namespace of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.running import REPO

IMAGE = REPO / "unikernels" / "build" / "httpd.elf"


def needs_vms() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, bridges and TAPs (CI runs as root)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is missing: `make test` installs it")


@pytest.fixture(scope="session")
def unikernel_image() -> Path:
    needs_vms()
    result = subprocess.run(["make", "-C", str(REPO / "unikernels")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"unikernel build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert IMAGE.exists()
    return IMAGE


def qemu_of(netns: str) -> list[psutil.Process]:
    """QEMU processes carrying our marker for this namespace."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # exited, waiting for its parent to reap it
        cmdline = p.info["cmdline"] or []
        if any(arg.startswith(f"ukproxy:{netns}:") for arg in cmdline):
            found.append(p)
    return found


def assert_nothing_left(netns: str) -> None:
    """After ukproxy stopped: no QEMU of `netns` and no namespace may remain. Whatever did is removed
    first, so that one failed test leaves nothing to the next."""
    leftovers = qemu_of(netns)
    for p in leftovers:
        p.kill()
    namespace_left = os.path.exists(f"/run/netns/{netns}")
    if namespace_left:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    assert not leftovers, f"QEMU processes left behind: {[p.pid for p in leftovers]}"
    assert not namespace_left, f"namespace {netns} left behind"


@pytest.fixture
def netns_name() -> Iterator[str]:
    """A unique backend namespace name; afterwards, nothing of it may remain.

    Request it before `ukproxy` so it is torn down after the proxies stop."""
    name = f"ukt-fleet-{uuid.uuid4().hex[:8]}"
    yield name
    assert_nothing_left(name)


@pytest.fixture(scope="session")
def static_image(unikernel_image: Path) -> Path:
    """The `static` service's image (built with the others): serves its 9P share over HTTP."""
    image = unikernel_image.parent / "static.elf"
    assert image.exists(), f"{image} was not built"
    return image
