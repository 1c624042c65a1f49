"""One place that reaps the master's children (workers and QEMU processes) and tells their owners.

The master installs `reap` as its SIGCHLD handler (run by the event loop, outside the signal
handler). Only the children registered here are reaped, each with waitpid(pid, WNOHANG): unlike
Gunicorn's waitpid(-1), this leaves alone the helpers that libraries fork and wait for themselves
(pyroute2 does, for namespaces), which would otherwise fail with ECHILD.
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

    def watch(self, pid: int, on_exit: ExitCallback) -> None:
        """Call `on_exit(wait_status)` when `pid` exits (at once if it already has)."""
        self._watched[pid] = on_exit
        self._reap_one(pid)

    def forget(self, pid: int) -> None:
        self._watched.pop(pid, None)

    def reap(self) -> None:
        for pid in list(self._watched):
            self._reap_one(pid)

    def _reap_one(self, pid: int) -> None:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: nothing more will be known of it
            done, status = pid, 0
        if done == pid and (callback := self._watched.pop(pid, None)) is not None:
            callback(status)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap on SIGCHLD. Needs asyncio's own loop: uvloop keeps SIGCHLD for itself."""
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # anything that exited before the handler existed
