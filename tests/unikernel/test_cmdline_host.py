"""The boot-argument parser (unikernels/kernel/cmdline.c) on the host under ASan and UBSan.

unikernels/tests/host/cmdline_test.c compiles the parser itself: the common keys, service= naming the
image's own service, the keys a service declares, every error path (each ends in exactly one fatal
exit), and random lines. `make -C unikernels host-tests` runs it too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIKERNELS = Path(__file__).resolve().parents[2] / "unikernels"
CFLAGS = [
    "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
    "-iquote", str(UNIKERNELS / "include"),
]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_boot_arguments_parse_strictly(tmp_path: Path) -> None:
    binary = tmp_path / "cmdline_test"
    src = UNIKERNELS / "tests" / "host" / "cmdline_test.c"
    proc = subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "cmdline: ok" in proc.stderr
