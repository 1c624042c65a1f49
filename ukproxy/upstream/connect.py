"""Connecting to an upstream server so that the connect can be cut off if the server goes away.

A connect to a VM that just died waits for its timeout (no RST comes from an address nobody holds);
`connect` registers itself with the server, and `Server.cut_off` ends it at once with `ServerGone`,
an OSError, so the caller treats it as any failed connect: the next server.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any, TypeVar

from ukproxy.upstream.server import Server

P = TypeVar("P", bound=asyncio.BaseProtocol)


class ServerGone(OSError):
    def __init__(self, server: Server):
        super().__init__(errno.EHOSTUNREACH, f"server {server.name} went away while connecting")


class _PendingConnect:
    def __init__(self, task: asyncio.Task[Any]):
        self.task = task
        self.cut = False

    def cut_off(self) -> None:
        self.cut = True
        self.task.cancel()


async def connect(loop: asyncio.AbstractEventLoop, server: Server, factory: Callable[[], P],
                  timeout: float) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection` to `server` within `timeout` (TimeoutError), or ServerGone."""
    if server.gone:
        raise ServerGone(server)
    task = loop.create_task(loop.create_connection(factory, server.host, server.port))
    pending = _PendingConnect(task)
    server.attach(pending)
    try:
        return await asyncio.wait_for(task, timeout)  # type: ignore[return-value]
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if pending.cut and (current is None or not current.cancelling()):
            raise ServerGone(server) from None
        raise
    finally:
        server.detach(pending)
