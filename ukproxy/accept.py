"""The accept mutex and Nginx's disabled counting.

Only the worker holding the mutex watches the listening sockets, so one connection wakes one
worker. The lock is a POSIX record lock (fcntl) on a shared file: the kernel drops it when its
owner dies, so a SIGKILLed holder cannot keep the others from accepting.

Disabled counting (ngx_event_accept.c): after each accept a worker computes
`accept_disabled = worker_connections / 8 - free_connections`; while it is positive the worker
skips that many turns at the lock, which lets less loaded workers take new connections.
"""

from __future__ import annotations

import fcntl
import os


def accept_disabled(worker_connections: int, free_connections: int) -> int:
    """Nginx's `ngx_accept_disabled`: positive once fewer than 1/8 of the connections are free."""
    return worker_connections // 8 - free_connections


class AcceptMutex:
    """A cross-process try-lock; `try_lock()` never blocks."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.held = False

    def try_lock(self) -> bool:
        if self.held:
            return True
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        self.held = True
        return True

    def unlock(self) -> None:
        if self.held:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.unlock()
        os.close(self._fd)


class DisabledCounter:
    """How many turns at the mutex a worker still has to skip (Nginx's `ngx_accept_disabled`)."""

    def __init__(self, worker_connections: int):
        self.worker_connections = worker_connections
        self.value = 0
        self.skips = 0  # turns skipped, for metrics

    def update(self, free_connections: int) -> None:
        """Recomputed after each accept, as Nginx does."""
        self.value = accept_disabled(self.worker_connections, free_connections)

    def should_skip(self) -> bool:
        """True when this turn is to be skipped; each skipped turn counts down by one."""
        if self.value > 0:
            self.value -= 1
            self.skips += 1
            return True
        return False
