"""The master's pid file, and a status file beside it through which `ukproxy reload` learns the outcome."""

from __future__ import annotations

import contextlib
import os


class AlreadyRunning(Exception):
    pass


def read_pid(path: str) -> int | None:
    """The pid in `path` if that process is alive, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


class PidFile:
    def __init__(self, path: str):
        self.path = path
        self.status_path = path + ".status"
        self.sequence = 0

    def acquire(self) -> None:
        other = read_pid(self.path)
        if other is not None and other != os.getpid():
            raise AlreadyRunning(f"ukproxy is already running as pid {other} (pid file {self.path})")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)  # atomic: a reader never sees a half-written pid

    def write_status(self, result: str) -> None:
        self.sequence += 1
        tmp = f"{self.status_path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} {self.sequence} {result}\n")
        os.replace(tmp, self.status_path)

    def release(self) -> None:
        if read_pid(self.path) == os.getpid():
            for p in (self.path, self.status_path):
                with contextlib.suppress(OSError):
                    os.unlink(p)


def read_status(pid_path: str) -> tuple[int, int, str] | None:
    try:
        with open(pid_path + ".status") as f:
            pid, seq, result = f.read().split()
        return int(pid), int(seq), result
    except (OSError, ValueError):
        return None
