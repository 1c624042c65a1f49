"""The static service's open-file cache (unikernels/services/static/file_cache.c), seen from outside.

What the cache holds is observed where it lives on the host: every cached entry is a fid the guest
keeps open, and QEMU's 9P server keeps one host file descriptor open per open fid, so QEMU's
/proc/PID/fd entries that point into the share are the cache's entries. Behaviour only: the speed it
buys is measured by `python -m bench.static` (its "cache off" VM).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.unikernel_harness import Lab, Vm
from tests.unikernel.lab import VMS_IN_A_NAMESPACE, built
from tests.unikernel.test_static_share import IMAGE, Session, boot_static
from tests.waiting import wait_until

pytestmark = [*VMS_IN_A_NAMESPACE, pytest.mark.timeout(240)]

BOUND_MAX = 8          # the bounded VM's open_file_cache_max
DISTINCT = 40          # distinct files asked for, five times the bound


@pytest.fixture(scope="module")
def image() -> Path:
    built("static")
    return IMAGE


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache") / "share"
    folder.mkdir()
    for i in range(DISTINCT):
        (folder / f"f{i}.txt").write_text(f"file {i}\n")
    return folder


def open_in_share(vm: Vm, share: Path) -> set[str]:
    """The share's files QEMU holds open for the guest: one per fid the guest has open."""
    assert vm.proc
    fds = Path(f"/proc/{vm.proc.pid}/fd")
    held = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue   # closed while we looked
        if target.startswith(f"{share}/"):
            held.add(target)
    return held


def test_the_cache_stays_within_its_entry_bound_under_many_distinct_paths(lab: Lab, share: Path) -> None:
    vm = boot_static(lab, "static-bound", 120, share,
                     extra=f"open_file_cache_max={BOUND_MAX} open_file_cache_valid_ms=600000")
    s = Session(lab, vm)
    try:
        for rnd in range(2):
            for i in range(DISTINCT):
                assert s.get(f"/f{i}.txt")["body"] == f"file {i}\n"
                held = open_in_share(vm, share)
                assert len(held) <= BOUND_MAX, f"round {rnd}, after f{i}: {len(held)} held"
        # Full, and holding the most recently used: evictions clunked the others.
        assert open_in_share(vm, share) == {f"{share}/f{i}.txt" for i in range(DISTINCT - BOUND_MAX, DISTINCT)}
        # Misses are not cached: a stream of missing paths costs no entry and evicts nothing.
        for i in range(50):
            assert s.get(f"/missing-{i}.txt")["status"] == 404
        assert len(open_in_share(vm, share)) == BOUND_MAX
    finally:
        s.close()


def test_an_edit_on_the_host_is_served_within_the_cache_bound(lab: Lab, share: Path) -> None:
    valid_s = 1.0
    vm = boot_static(lab, "static-valid", 121, share, extra=f"open_file_cache_valid_ms={int(valid_s * 1000)}")
    f = share / "edited.txt"
    f.write_text("before\n")
    s = Session(lab, vm)
    try:
        first = s.get("/edited.txt")
        assert first["body"] == "before\n"
        assert f"{f}" in open_in_share(vm, share), "the file is not held open: nothing was cached"
        # Replaced by rename, as editors and deploy tools do: the cached fid still reads the old inode.
        tmp = share / ".edited.tmp"
        tmp.write_text("after the edit\n")
        tmp.replace(f)
        edited = time.monotonic()
        # The bound plus one request's time on a loaded TCG host.
        answer = wait_until(lambda: s.get("/edited.txt"), "the edit to be served",
                            accept=lambda r: r["body"] == "after the edit\n", timeout=valid_s + 2.0)
        assert time.monotonic() - edited <= valid_s + 2.0
        assert answer["headers"]["etag"] != first["headers"]["etag"]
    finally:
        s.close()


def test_with_the_cache_off_an_edit_is_served_at_once_and_nothing_is_held(lab: Lab, share: Path) -> None:
    vm = boot_static(lab, "static-nocache", 122, share, extra="open_file_cache_valid_ms=0")
    f = share / "live.txt"
    f.write_text("one\n")
    s = Session(lab, vm)
    try:
        assert s.get("/live.txt")["body"] == "one\n"
        assert open_in_share(vm, share) == set()
        tmp = share / ".live.tmp"
        tmp.write_text("two, longer\n")
        tmp.replace(f)
        assert s.get("/live.txt")["body"] == "two, longer\n"   # the very next request
    finally:
        s.close()
