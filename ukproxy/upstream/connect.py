"""Connecting to an upstream server so that the connect can be cut off if the server goes away.

A connect to a VM that just died waits for its timeout (no RST comes from an address nobody holds);
`connect` registers itself with the server, and `Server.cut_off` ends it at once with `ServerGone`,
an OSError, so the caller treats it as any failed connect: the next server.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ukproxy.proxy.deadline_wheel import DeadlineWheel
from ukproxy.upstream.server import Server

P = TypeVar("P", bound=asyncio.BaseProtocol)


class ServerGone(OSError):
    def __init__(self, server: Server):
        super().__init__(errno.EHOSTUNREACH, f"server {server.name} went away while connecting")


class _PendingConnect:
    """A connect under way in its caller's task. Its deadline or its server's going cancels that task (no
    task or wait_for of its own: one connect per tcp client and per fresh upstream http connection), and
    `connect` turns the cancellation it caused into TimeoutError or ServerGone."""

    __slots__ = ("task", "why")

    def __init__(self, task: asyncio.Task[Any]):
        self.task = task
        self.why = ""  # "timeout" or "gone" once we cancelled the task

    def cut_off(self) -> None:
        self._cancel("gone")

    def time_out(self) -> None:
        self._cancel("timeout")

    def deadline_reached(self) -> None:
        """The worker's deadline wheel (proxy/deadline_wheel.py): connect_timeout is up."""
        self._cancel("timeout")

    def _cancel(self, why: str) -> None:
        if not self.why:
            self.why = why
            self.task.cancel()


async def connect(loop: asyncio.AbstractEventLoop, server: Server, factory: Callable[[], P], timeout: float,
                  make_socket: Callable[[asyncio.AbstractEventLoop, Server],
                                        Awaitable[socket.socket | None]] | None = None,
                  deadlines: DeadlineWheel | None = None) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection` to `server` within `timeout` (TimeoutError), or ServerGone. Runs in a task.
    `make_socket` connects a socket of its own instead (a peer node, from the host namespace). With
    `deadlines` (the worker's wheel) the timeout costs no loop timer of its own."""
    if server.gone:
        raise ServerGone(server)
    task = asyncio.current_task(loop)  # with the loop named: no get_running_loop, whose getpid is a system call
    assert task is not None, "connect is awaited from a task"
    pending = _PendingConnect(task)
    timer = None
    bucket = 0
    if timeout > 0:
        if deadlines is not None:
            bucket = deadlines.add(pending, loop.time() + timeout)
        else:
            timer = loop.call_later(timeout, pending.time_out)
    server.attach(pending)
    try:
        sock = await make_socket(loop, server) if make_socket is not None else None
        if sock is not None:
            return await loop.create_connection(factory, sock=sock)  # type: ignore[return-value]
        return await loop.create_connection(factory, server.host, server.port)  # type: ignore[return-value]
    except asyncio.CancelledError:
        if pending.why and task.uncancel() == 0:  # ours alone: nobody else asked the task to stop
            if pending.why == "timeout":
                raise TimeoutError() from None
            raise ServerGone(server) from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if bucket and deadlines is not None:
            deadlines.remove(pending, bucket)
        server.detach(pending)
