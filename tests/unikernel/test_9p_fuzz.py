"""What the guest takes from devices, checked on the host under ASan and UBSan.

unikernels/fs/tests/fuzz_9p.c compiles unikernels/fs/9p.c and answers every request the
client sends with a server's reply that is then damaged at random (bytes, sizes, counts,
tags, types, truncation, Rlerror, timeouts). unikernels/drivers/tests/virtq_test.c compiles
unikernels/drivers/virtio_pci.c and writes used rings as a broken device might (ids never
posted, returned twice or beyond the ring, lengths beyond the buffer). Seeded, so a
failure replays with the same seed. `make -C unikernels host-tests` runs both too, with their
default seed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESSES = {"fuzz_9p": REPO / "unikernels" / "fs" / "tests" / "fuzz_9p.c",
             "virtq_test": REPO / "unikernels" / "drivers" / "tests" / "virtq_test.c"}
CFLAGS = [
    "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
    "-iquote", str(REPO / "unikernels" / "include"),
]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def build(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    binary = tmp_path_factory.mktemp(name) / name
    proc = subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(HARNESSES[name])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return binary


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory, "fuzz_9p")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_damaged_replies_never_crash_the_client_and_get_errors(fuzzer: Path, seed: int) -> None:
    proc = subprocess.run([str(fuzzer), str(seed), "20000"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"seed {seed}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", proc.stdout)}
    # The run reached the parser deeply: mounts succeeded, replies were refused as malformed.
    assert stats["mounted"] > 1000, proc.stdout
    assert stats["bad_replies"] > 1000, proc.stdout
    assert stats["requests"] > 50000, proc.stdout


def test_used_ring_ids_and_lengths_from_the_device_are_checked(tmp_path_factory: pytest.TempPathFactory) -> None:
    binary = build(tmp_path_factory, "virtq_test")
    proc = subprocess.run([str(binary), "1", "5000"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", proc.stdout)}
    assert stats["good"] > 10000 and stats["bad"] > 10000, proc.stdout
