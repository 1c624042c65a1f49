"""The guest's 9P2000.L reply parsing, fuzzed on the host.

tests/unikernel/host/fuzz_9p.c compiles unikernels/fs/9p.c with AddressSanitizer and
UndefinedBehaviorSanitizer and answers every request the client sends with a server's
reply that is then damaged at random (bytes, sizes, counts, tags, types, truncation,
Rlerror, timeouts). Seeded, so a failure replays with the same seed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "unikernel" / "host" / "fuzz_9p.c"
CFLAGS = [
    "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
    "-iquote", str(REPO / "unikernels" / "include"),
]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("fuzz9p") / "fuzz_9p"
    proc = subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(HARNESS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return binary


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_damaged_replies_never_crash_the_client_and_get_errors(fuzzer: Path, seed: int) -> None:
    proc = subprocess.run([str(fuzzer), str(seed), "20000"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"seed {seed}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", proc.stdout)}
    # The run reached the parser deeply: mounts succeeded, replies were refused as malformed.
    assert stats["mounted"] > 1000, proc.stdout
    assert stats["bad_replies"] > 1000, proc.stdout
    assert stats["requests"] > 50000, proc.stdout
