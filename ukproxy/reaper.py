"""One place that reaps the master's children (workers and QEMU processes) and tells their owners.

The master installs `reap` as its SIGCHLD handler (run by the event loop, outside the signal
handler). Children are reaped with waitpid(-1, WNOHANG) until none is left, as Gunicorn's arbiter
does, and each exit status goes to the callback registered for that pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

ExitCallback = Callable[[int], None]


class ChildReaper:
    def __init__(self) -> None:
        self._watched: dict[int, ExitCallback] = {}
        self._early: dict[int, int] = {}  # statuses of children reaped before anyone watched them

    def watch(self, pid: int, on_exit: ExitCallback) -> None:
        """Call `on_exit(wait_status)` when `pid` exits (at once if it already has)."""
        if pid in self._early:
            on_exit(self._early.pop(pid))
            return
        self._watched[pid] = on_exit

    def forget(self, pid: int) -> None:
        self._watched.pop(pid, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self._watched.pop(pid, None)
            if callback is None:
                self._early[pid] = status
            else:
                callback(status)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap on SIGCHLD. Needs asyncio's own loop: uvloop keeps SIGCHLD for itself."""
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # anything that exited before the handler existed
