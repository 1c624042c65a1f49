"""The multiprocess directory: where every process's metric files live (prometheus-client's mmap files).

The master makes it fresh under its run directory before any worker starts and sets
PROMETHEUS_MULTIPROC_DIR in its own environment, so every child (workers, and QEMU, harmlessly)
inherits it before it imports prometheus_client. A reaped worker's live gauges are removed, and
its counters and histograms are added into the master's archive files and deleted, so the directory
holds one set of files per live process however many workers have come and gone (prometheus-client
itself keeps a dead process's files for ever). Per-server series of servers that no longer exist
(a VM's, once it is gone) are not archived. The directory goes when the master stops.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from collections.abc import Callable

ENV = "PROMETHEUS_MULTIPROC_DIR"
ARCHIVE = "archive"  # in place of a pid: what dead processes counted ("counter_archive.db")
SUMMED = ("counter", "histogram")  # file kinds the collector adds up across processes


class AlreadyImported(RuntimeError):
    """prometheus_client was imported before the directory was set: it would keep values in memory."""


def prepare(directory: str) -> None:
    if "prometheus_client" in sys.modules and os.environ.get(ENV) != directory:
        raise AlreadyImported("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    shutil.rmtree(directory, ignore_errors=True)  # wiped at start: no counts from an earlier run
    os.makedirs(directory, mode=0o755)
    os.environ[ENV] = directory


def directory() -> str | None:
    return os.environ.get(ENV)


ServerExists = Callable[[str, str], bool]  # (upstream, server label) → does that server still exist?


def is_gone_server(labels: dict[str, str], server_exists: ServerExists) -> bool:
    """Whether a series is a per-server one (it has a `server` label) of a server that no longer exists."""
    server = labels.get("server")
    return server is not None and not server_exists(labels.get("upstream", ""), server)


def mark_dead(pid: int, server_exists: ServerExists = lambda upstream, server: True) -> None:
    """Drop a dead process's live gauges; its counters and histograms stay in the totals, moved into
    the archive."""
    path = directory()
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
        archive_dead(pid, path, server_exists)


def archive_dead(pid: int, path: str, server_exists: ServerExists = lambda upstream, server: True) -> None:
    """Add a dead process's counter and histogram files into the archive files, then delete them.
    The master alone writes the archive, and scrapes run on its loop: no reader sees half a move."""
    from prometheus_client.mmap_dict import MmapedDict

    for kind in SUMMED:
        for dead in glob.glob(os.path.join(path, f"{kind}_{pid}.db")):
            archive = MmapedDict(os.path.join(path, f"{kind}_{ARCHIVE}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    if is_gone_server(json.loads(key)[2], server_exists):
                        continue  # a gone VM's figures would be filtered from every scrape anyway
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            os.unlink(dead)


def remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
