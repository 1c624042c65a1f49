"""What the unikernel tests share besides fixtures (those are in conftest.py): the marks for tests that
need QEMU or root, building images once with a readable failure, and a VM's own counters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from bench.unikernel_harness import Lab, Vm, build_image, is_root, qemu_available

F = TypeVar("F", bound=Callable[..., object])

needs_qemu = pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 is not installed")
_skip_unless_root = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces, bridges and TAPs")
# A module all of whose tests boot VMs in a namespace: `pytestmark = [*VMS_IN_A_NAMESPACE, ...]`.
VMS_IN_A_NAMESPACE = [pytest.mark.qemu, pytest.mark.root, needs_qemu, _skip_unless_root]


def needs_root(test: F) -> F:
    """One test that needs root (namespaces, bridges, TAPs) in a module whose other tests do not."""
    return pytest.mark.root(_skip_unless_root(test))


def built(*services: str) -> Path:
    """`make -C unikernels` for these services (all when none are named); a failed build fails the test
    with the build's output instead of a traceback. Returns httpd's image."""
    try:
        return build_image(*services)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def api_info(lab: Lab, vm: Vm, timeout: float = 10) -> dict:
    """The VM's /api/info counters, fetched with curl from inside the lab's namespace."""
    r = lab.netns.run("curl", "-sS", "--max-time", f"{timeout:g}", f"http://{vm.ip}/api/info")
    assert r.returncode == 0, f"{vm.name} does not answer: {r.stderr}\n{vm.output()[-2000:]}"
    return json.loads(r.stdout)
