"""pin_process_tree / read_affinity on real child processes with real threads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ukproxy.vm.cpu_pinning import pin_process_tree, read_affinity
from ukproxy.vm.placement.host import usable_cpus

# A stand-in for QEMU: three idle threads, and on request one more thread or a child process.
CHILD = r"""
import subprocess, sys, threading
stop = threading.Event()
for _ in range(3):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "thread":
        thread = threading.Thread(target=stop.wait, daemon=True)
        thread.start()
        print(thread.native_id, flush=True)
    elif line.strip() == "child":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.pid, flush=True)
"""

CPUS = usable_cpus()


class Child:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._read() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, command: str) -> int:
        """Make the child start a thread or a process; returns its tid or pid."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return int(self._read())

    def _read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        for descendant in psutil.Process(self.pid).children(recursive=True):
            descendant.kill()
        self.process.kill()
        self.process.wait()


@pytest.fixture
def child() -> Iterator[Child]:
    started = Child()
    yield started
    started.stop()


def kernel_thread_ids(pid: int) -> set[int]:
    return {int(name) for name in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("cpu", CPUS, ids=[f"cpu{cpu}" for cpu in CPUS])
def test_every_thread_is_pinned_and_reported(child: Child, cpu: int) -> None:
    tids = pin_process_tree(child.pid, cpu)

    assert set(tids) == kernel_thread_ids(child.pid)
    assert len(tids) >= 4  # main thread + the three started ones
    assert {tid: os.sched_getaffinity(tid) for tid in tids} == {tid: {cpu} for tid in tids}
    assert read_affinity(child.pid) == {tid: {cpu} for tid in tids}


def test_unpinned_process_reads_back_the_full_mask(child: Child) -> None:
    masks = read_affinity(child.pid)

    assert set(masks) == kernel_thread_ids(child.pid)
    assert all(mask == set(CPUS) for mask in masks.values())


def test_thread_started_after_pinning_stays_on_the_cpu(child: Child) -> None:
    cpu = CPUS[-1]
    pin_process_tree(child.pid, cpu)

    late_tid = child.ask("thread")

    assert os.sched_getaffinity(late_tid) == {cpu}
    assert read_affinity(child.pid)[late_tid] == {cpu}


def test_child_processes_are_pinned_with_their_parent(child: Child) -> None:
    grandchild_pid = child.ask("child")
    cpu = CPUS[0]

    tids = pin_process_tree(child.pid, cpu)

    assert kernel_thread_ids(grandchild_pid) <= set(tids)
    assert os.sched_getaffinity(grandchild_pid) == {cpu}


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two usable CPUs")
def test_pinning_again_moves_every_thread(child: Child) -> None:
    first, second = CPUS[0], CPUS[1]
    pin_process_tree(child.pid, first)

    tids = pin_process_tree(child.pid, second)

    assert read_affinity(child.pid) == {tid: {second} for tid in tids}


def test_missing_process_is_a_lookup_error() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped, so its pid names nothing

    with pytest.raises(ProcessLookupError):
        pin_process_tree(finished.pid, CPUS[0])
    with pytest.raises(ProcessLookupError):
        read_affinity(finished.pid)


def test_cpu_outside_the_host_is_refused(child: Child) -> None:
    no_such_cpu = max(int(Path("/sys/devices/system/cpu/kernel_max").read_text()) + 1, 4096)

    with pytest.raises(OSError):
        pin_process_tree(child.pid, no_such_cpu)
    assert all(mask == set(CPUS) for mask in read_affinity(child.pid).values())
