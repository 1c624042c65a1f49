"""A minimal asyncio client for QEMU's machine protocol (QMP) over a unix socket.

One connection per VM: connect (retrying until QEMU has made the socket), read the greeting,
negotiate with `qmp_capabilities`, then `execute` commands. Replies are matched to commands by
`id`; asynchronous events (POWERDOWN, SHUTDOWN, STOP, ...) are kept in a short list for callers
that care and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from typing import Any

# QMP lines are small (a reply to query-status is ~100 bytes); this only bounds a misbehaving peer.
_LINE_LIMIT = 1 << 20
_EVENTS_KEPT = 64


class QmpError(Exception):
    """QMP said no (an `error` reply), timed out, or the connection failed."""


class QmpClient:
    def __init__(self, path: str) -> None:
        self.path = path
        self.events: deque[dict[str, Any]] = deque(maxlen=_EVENTS_KEPT)
        self.greeting: dict[str, Any] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._receiver: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._receiver is not None and not self._receiver.done()

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect, read the greeting and leave negotiation mode, all within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._connect_retrying()
                assert self._reader is not None
                self.greeting = json.loads(await self._reader.readline())
                if "QMP" not in self.greeting:
                    raise QmpError(f"not a QMP greeting: {self.greeting!r}")
                self._receiver = asyncio.get_running_loop().create_task(self._receive())
                await self.execute("qmp_capabilities", timeout=timeout)
        except BaseException as e:
            await self.close()
            if isinstance(e, TimeoutError):
                raise QmpError(f"QMP at {self.path} not ready within {timeout}s") from None
            if isinstance(e, OSError | ValueError):
                raise QmpError(f"QMP at {self.path}: {e}") from e
            raise

    async def _connect_retrying(self) -> None:
        # QEMU creates the listening socket during start-up; until then connect fails.
        delay = 0.005
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=_LINE_LIMIT)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)

    async def _receive(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "event" in message:
                    self.events.append(message)
                    continue
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (OSError, ValueError):
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(QmpError(f"QMP connection to {self.path} closed"))
            self._pending.clear()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        """Run `command` and return its `return` value; raise QmpError on an error reply or timeout."""
        if self._writer is None or (self._receiver is not None and self._receiver.done()):
            raise QmpError(f"QMP connection to {self.path} is not open")
        request_id = next(self._ids)
        request: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            request["arguments"] = arguments
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(json.dumps(request).encode() + b"\n")
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                reply = await future
        except TimeoutError:
            raise QmpError(f"QMP {command} got no reply within {timeout}s") from None
        except OSError as e:
            raise QmpError(f"QMP {command}: {e}") from e
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise QmpError(f"QMP {command} failed: {error.get('class')}: {error.get('desc')}")
        return reply.get("return")

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        self._reader = None
