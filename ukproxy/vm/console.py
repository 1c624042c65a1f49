"""A VM's serial console, read from a pipe by the event loop and kept as a short ring of lines.

QEMU writes the guest's serial port (`-serial stdio`) and its own error messages to the same
pipe. It is read for the VM's whole life: a pipe nobody drains would fill and stall the guest
on its next print.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque

_READ_SIZE = 4096
_LINE_LIMIT = 4096  # a guest printing without newlines must not grow our buffer without bound


class Console:
    def __init__(self, fd: int, keep_lines: int = 200, ready_prefix: str = "ready") -> None:
        """Take ownership of the read end `fd` of the console pipe."""
        self._fd: int | None = fd
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._partial = b""
        self._ready_prefix = ready_prefix
        self.ready_at: float | None = None  # time.monotonic() when the ready line was read
        loop = asyncio.get_running_loop()
        self.ready_line: asyncio.Future[str] = loop.create_future()  # the first line starting with `ready`
        self.closed: asyncio.Future[None] = loop.create_future()  # EOF: every writer (QEMU) is gone
        os.set_blocking(fd, False)
        self._loop = loop
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish()
            return
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            self._add(raw)
        if len(self._partial) > _LINE_LIMIT:
            self._add(self._partial)
            self._partial = b""

    def _add(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self._lines.append(line)
        if line.startswith(self._ready_prefix) and not self.ready_line.done():
            self.ready_at = time.monotonic()
            self.ready_line.set_result(line)

    def _finish(self) -> None:
        if self._partial:
            self._add(self._partial)
            self._partial = b""
        self.close()

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines, including a line still being written."""
        if lines <= 0:
            return ""
        recent = list(self._lines)
        if self._partial:
            recent.append(self._partial.decode(errors="replace"))
        return "\n".join(recent[-lines:])

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if not self.closed.done():
            self.closed.set_result(None)
