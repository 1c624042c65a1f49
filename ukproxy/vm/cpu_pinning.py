"""Pin a QEMU process, every one of its threads and any child processes to one host CPU.

Linux affinity is per thread: setting it on a pid only moves that pid's main thread, and QEMU's vCPU and
I/O threads already exist by the time we pin. So each thread is pinned by its tid. Threads created later
inherit their creator's mask, so once every existing thread is pinned the whole tree stays on the CPU;
the listing is repeated until it stops finding new threads, to close the window where an unpinned
thread spawns one while we work.
"""

from __future__ import annotations

import os

import psutil

# A process that keeps spawning threads faster than we pin them should fail loudly, not loop forever.
_MAX_PASSES = 10


def _tree_thread_ids(pid: int) -> set[int]:
    """Thread ids of the process and of all its descendants that are still alive."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess as error:
        raise ProcessLookupError(f"no process {pid}") from error
    tids: set[int] = set()
    for process in processes:
        try:
            tids.update(thread.id for thread in process.threads())
        except psutil.NoSuchProcess:
            continue  # a child exited while we listed; nothing left to pin
    return tids


def pin_process_tree(pid: int, cpu: int) -> list[int]:
    """Pin the process, its threads and its descendants' threads to `cpu`; return the tids pinned, sorted.

    Raises ProcessLookupError if the process does not exist, OSError(EINVAL) if the CPU is not usable.
    """
    pinned: set[int] = set()
    for _ in range(_MAX_PASSES):
        todo = _tree_thread_ids(pid) - pinned
        if not todo:
            return sorted(pinned)
        for tid in todo:
            try:
                os.sched_setaffinity(tid, {cpu})
            except ProcessLookupError:
                continue  # the thread ended between listing and pinning
            pinned.add(tid)
    raise RuntimeError(f"process {pid} kept creating threads while being pinned to cpu {cpu}")


def read_affinity(pid: int) -> dict[int, set[int]]:
    """The CPU mask of every live thread in the process tree, by tid."""
    masks: dict[int, set[int]] = {}
    for tid in _tree_thread_ids(pid):
        try:
            masks[tid] = set(os.sched_getaffinity(tid))
        except ProcessLookupError:
            continue
    return masks
