"""Host folders in the guest over virtio-9p: the fs_selftest image against real QEMU shares.

The image mounts the share, lists its root, hashes a file, probes symlinks and (on a
writable share) writes, syncs, renames and reads back a file, printing `fs: ...` lines;
the host checks them against its own view of the folder. User networking with
restrict=on: the VM needs a NIC to boot but sends nothing anywhere, so no root is needed.
The same image and httpd also run on QEMU's microvm machine, where both devices sit on
virtio-mmio instead of PCI (httpd is then reached through a loopback hostfwd).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.unikernel_harness import QEMU, UNIKERNELS, Vm, qemu_argv
from tests.running import free_port
from tests.unikernel.lab import built, needs_qemu
from tests.waiting import wait_until

IMAGE = UNIKERNELS / "build" / "fs_selftest.elf"
BIG = 10 * 1024 * 1024
ELOOP, ENODEV, EROFS, ETIMEDOUT = 40, 19, 30, 110
DT_DIR, DT_REG, DT_LNK = 4, 8, 10

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600), needs_qemu]


@pytest.fixture(scope="module")
def image() -> Path:
    built("fs_selftest", "httpd")   # httpd for the microvm NIC test
    return IMAGE


class Run:
    """One boot of fs_selftest: its `fs:` lines, keyed by their first word."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = [line[4:] for line in lines if line.startswith("fs: ")]

    def first(self, word: str) -> dict[str, str]:
        for line in self.lines:
            parts = line.split()
            if parts[0] == word:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                fields["args"] = " ".join(p for p in parts[1:] if "=" not in p)
                return fields
        raise AssertionError(f"no 'fs: {word}' line in:\n" + "\n".join(self.lines))

    def entries(self) -> dict[str, int]:
        return {line.split()[1]: int(line.split("type=")[1]) for line in self.lines if line.startswith("entry ")}


def microvm_argv(image: Path, append: str, netdev: str) -> list[str]:
    """microvm without ACPI (the kernel's power button needs a PC's FADT), NIC on virtio-mmio."""
    return [
        QEMU, "-M", "microvm,acpi=off,x-option-roms=off", "-accel", "tcg", "-nodefaults", "-no-user-config",
        "-nographic", "-no-reboot", "-m", "16", "-kernel", str(image), "-append", append, "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", netdev, "-device", "virtio-net-device,netdev=n0",
    ]


def boot(image: Path, workdir: Path, share: Path, append: str, readonly: bool, tag: str = "share0",
         microvm: bool = False, fsdev_extra: str = "") -> Run:
    append = f"ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=fs-0 {append}"
    fsdev = f"local,id=f0,path={share},security_model=none" + (",readonly=on" if readonly else "") + fsdev_extra
    if microvm:
        argv = microvm_argv(image, append, "user,id=n0,restrict=on")
        argv += ["-fsdev", fsdev, "-device", f"virtio-9p-device,fsdev=f0,mount_tag={tag}"]
    else:
        argv = qemu_argv(append=append, netdev="user,id=n0,restrict=on", image=image)
        argv += ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=f0,mount_tag={tag},disable-modern=on,romfile="]
    vm = Vm(argv=argv, workdir=workdir, name="fs-0")
    try:
        vm.start()
        vm.wait_ready(timeout=300)   # fs_selftest runs its checks before it listens
        return Run(vm.lines)
    finally:
        vm.stop()


@pytest.fixture(scope="module")
def ro_share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    share = tmp_path_factory.mktemp("ro")
    (share / "big.bin").write_bytes(os.urandom(BIG))
    (share / "sub").mkdir()
    (share / "sub" / "a.txt").write_text("hello\n")
    (share / "index.html").write_text("<p>index</p>\n")
    (share / "escape").symlink_to("/etc/passwd")
    (share / "etc_link").symlink_to("/etc")
    return share


@pytest.fixture(scope="module")
def ro_run(image: Path, ro_share: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return boot(image, tmp_path_factory.mktemp("vm"), ro_share,
                "tag=share0 file=big.bin link=escape through=etc_link/passwd", readonly=True)


def test_mount_negotiates_a_bounded_msize(ro_run: Run) -> None:
    mount = ro_run.first("mount")
    assert mount["rc"] == "0"
    assert 4096 <= int(mount["max_io"]) <= 128 * 1024


def test_readdir_lists_the_share_root_with_types(ro_run: Run, ro_share: Path) -> None:
    assert ro_run.first("readdir")["rc"] == "0"
    assert ro_run.entries() == {"big.bin": DT_REG, "sub": DT_DIR, "index.html": DT_REG,
                                "escape": DT_LNK, "etc_link": DT_LNK}
    assert set(ro_run.entries()) == {p.name for p in ro_share.iterdir()}


def test_a_10_mib_file_reads_whole_with_its_sha256(ro_run: Run, ro_share: Path) -> None:
    assert ro_run.first("stat")["size"] == str(BIG)
    assert ro_run.first("fstat")["size"] == str(BIG)
    read = ro_run.first("read")
    assert read["rc"] == "0" and read["bytes"] == str(BIG)
    assert read["sha256"] == hashlib.sha256((ro_share / "big.bin").read_bytes()).hexdigest()


def test_a_symlink_is_reported_never_followed(ro_run: Run) -> None:
    lstat = ro_run.first("lstat")
    assert lstat["rc"] == "0" and int(lstat["mode"], 16) & 0o170000 == 0o120000
    assert ro_run.first("open-link")["rc"] == str(-ELOOP)
    through = ro_run.first("through")
    assert through["stat"] == str(-ELOOP) and through["open"] == str(-ELOOP)


def test_writes_to_a_read_only_mount_are_refused_in_the_guest(ro_run: Run, ro_share: Path) -> None:
    assert ro_run.first("open-write-probe")["rc"] == str(-EROFS)
    assert not (ro_share / "probe.tmp").exists()


def test_no_reply_was_malformed_or_late(ro_run: Run) -> None:
    counters = ro_run.first("counters")
    assert counters["bad_replies"] == "0" and counters["timeouts"] == "0"
    assert int(counters["requests"]) > BIG // (128 * 1024)


def expected_written() -> bytes:
    """What fs_selftest writes: 200000 bytes in 30000-byte pieces of its pattern."""
    pattern = bytes((i * 7 + i // 251) & 0xFF for i in range(80 * 1024))
    out, off = bytearray(), 0
    while off < 200000:
        n = min(200000 - off, 30000)
        out += pattern[off % 1000:off % 1000 + n]
        off += n
    return bytes(out)


@pytest.fixture
def rw_share(tmp_path: Path) -> Iterator[Path]:
    share = tmp_path / "rw"
    (share / "sub").mkdir(parents=True)
    yield share


def test_a_writable_share_gets_a_file_created_written_synced_and_renamed(image: Path, rw_share: Path,
                                                                       tmp_path: Path) -> None:
    run = boot(image, tmp_path, rw_share, "tag=share0 rw=1 out=sub/result.bin", readonly=False)
    wrote = run.first("wrote")
    assert wrote["rc"] == "0" and wrote["fsync"] == "0" and wrote["bytes"] == "200000"
    assert run.first("rename")["rc"] == "0"
    data = (rw_share / "sub" / "result.bin").read_bytes()
    assert data == expected_written()
    assert not (rw_share / "sub" / "result.bin.tmp").exists()
    # ... and the guest read back what the host holds.
    assert run.first("read")["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_host_side_read_only_share_answers_writes_with_erofs(image: Path, rw_share: Path, tmp_path: Path) -> None:
    run = boot(image, tmp_path, rw_share, "tag=share0 rw=1 out=x.bin", readonly=True)
    assert run.first("mount")["rc"] == "0"
    assert run.first("create")["rc"] == str(-EROFS)   # the host's Rlerror, passed through
    assert list(rw_share.rglob("*")) == [rw_share / "sub"]


def test_a_stalled_host_is_a_timeout_and_the_share_comes_back(image: Path, ro_share: Path, tmp_path: Path) -> None:
    # QEMU's fsdev throttling at 8 KiB/s: after its first burst a 64 KiB read takes ~8 s, past the
    # guest's 5 s bound (a throttle is wall-clock time: a slow machine only makes the read slower). The
    # call returns -ETIMEDOUT, later calls fail at once while the host is still busy with it (the VM
    # stays up: it reaches `ready`), and once the host answers the share works again.
    run = boot(image, tmp_path, ro_share, "tag=share0 file=big.bin recover=index.html",
               readonly=True, fsdev_extra=",throttling.bps-total=8192")
    assert run.first("read")["rc"] == str(-ETIMEDOUT)
    assert run.first("recover")["rc"] == "0"
    assert int(run.first("counters")["timeouts"]) >= 1


def test_an_unknown_mount_tag_is_enodev_and_the_vm_carries_on(image: Path, ro_share: Path, tmp_path: Path) -> None:
    run = boot(image, tmp_path, ro_share, "tag=other", readonly=True)
    assert run.first("mount")["rc"] == str(-ENODEV)
    assert run.first("done") is not None


# ---- microvm: the same drivers over virtio-mmio ----

def test_microvm_reads_a_share_over_virtio_mmio(image: Path, ro_share: Path, tmp_path: Path) -> None:
    run = boot(image, tmp_path, ro_share, "tag=share0 file=sub/a.txt link=escape", readonly=True, microvm=True)
    assert run.first("mount")["rc"] == "0"
    assert set(run.entries()) == {p.name for p in ro_share.iterdir()}
    assert run.first("read")["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert run.first("open-link")["rc"] == str(-ELOOP)


def test_microvm_writes_a_share_over_virtio_mmio(image: Path, rw_share: Path, tmp_path: Path) -> None:
    run = boot(image, tmp_path, rw_share, "tag=share0 rw=1 out=r.bin", readonly=False, microvm=True)
    assert run.first("rename")["rc"] == "0"
    assert (rw_share / "r.bin").read_bytes() == expected_written()


def test_microvm_nic_over_virtio_mmio_serves_http(image: Path, tmp_path: Path) -> None:
    port = free_port()
    argv = microvm_argv(UNIKERNELS / "build" / "httpd.elf", "ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=micro-0",
                        f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80")
    vm = Vm(argv=argv, workdir=tmp_path, name="micro-0")
    try:
        vm.start()
        vm.wait_ready(timeout=120)
        expected = (UNIKERNELS / "services" / "httpd" / "embed" / "large.txt").read_bytes()

        def fetch() -> bytes | None:
            r = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/static/large.txt"],
                               capture_output=True)
            return r.stdout if r.returncode == 0 else None

        assert wait_until(fetch, timeout=60, what="64 KiB from httpd on microvm") == expected
    finally:
        vm.stop()
