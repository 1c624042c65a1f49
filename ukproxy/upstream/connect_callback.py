"""An upstream connect that calls back when done, for callers that would otherwise need a task per connect.

The tcp proxy connects once per client connection. As a coroutine that cost an asyncio Task (its creation,
its registration among all tasks, a loop turn per step) and two coroutine frames of ours around uvloop's
`create_connection`. Here uvloop's coroutine is stepped by hand from its waiter's done callback, the way a
Task would step it, and nothing else is made. Timeout (the worker's deadline wheel) and a server's going
(`Server.cut_off`) cancel the waiter, as cancelling a task would; uvloop then closes its half-made
transport. The outcome is the same as `upstream/connect.py`'s: a transport, TimeoutError or ServerGone.
See docs/architecture.md, "tcp proxying".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ukproxy.proxy.deadline_wheel import DeadlineWheel
from ukproxy.upstream.connect import ServerGone
from ukproxy.upstream.server import Server

# done(transport, None) once connected, or done(None, error): TimeoutError, ServerGone or the OSError.
Done = Callable[[asyncio.Transport | None, BaseException | None], None]


class CallbackConnect:
    """One connect under way; made by `start_connect`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server: Server, factory: Callable[[], asyncio.Protocol],
                 timeout: float, deadlines: DeadlineWheel, done: Done):
        self.server = server
        self.deadlines = deadlines
        self.done: Done | None = done
        self.why = ""  # "timeout" or "gone" once we cancelled the connect
        self.waiter: asyncio.Future[Any] | None = None
        self.bucket = deadlines.add(self, loop.time() + timeout) if timeout > 0 else 0
        server.attach(self)
        self.coro: Coroutine[Any, Any, tuple[asyncio.BaseTransport, asyncio.BaseProtocol]] = \
            loop.create_connection(factory, server.host, server.port)
        self.step(None)

    def step(self, _waiter: Any) -> None:
        """Run uvloop's coroutine to its next wait, or to its end."""
        self.waiter = None
        try:
            waiter = self.coro.send(None)
        except StopIteration as stop:
            self._finish(stop.value[0], None)
            return
        except asyncio.CancelledError:
            self._finish(None, TimeoutError() if self.why == "timeout" else ServerGone(self.server))
            return
        except Exception as e:  # OSError mostly; whatever it is, this connect failed
            self._finish(None, e)
            return
        self.waiter = waiter
        waiter.add_done_callback(self.step)

    # cancelling, as a task's cancel would: the waiter is cancelled and the coroutine sees CancelledError

    def cut_off(self) -> None:
        """The server is gone (Server.cut_off)."""
        self._cancel("gone")

    def deadline_reached(self) -> None:
        """The worker's deadline wheel (proxy/deadline_wheel.py): connect_timeout is up."""
        self.bucket = 0
        self._cancel("timeout")

    def _cancel(self, why: str) -> None:
        if not self.why and self.waiter is not None:
            self.why = why
            self.waiter.cancel()  # its done callback steps the coroutine into CancelledError

    def _finish(self, transport: Any, error: BaseException | None) -> None:
        if self.bucket:
            self.deadlines.remove(self, self.bucket)
            self.bucket = 0
        self.server.detach(self)
        done = self.done
        self.done = None  # no cycle through the caller's bound method
        if done is not None:
            done(transport, error)


def start_connect(loop: asyncio.AbstractEventLoop, server: Server, factory: Callable[[], asyncio.Protocol],
                  timeout: float, deadlines: DeadlineWheel, done: Done) -> None:
    """Connect to `server` (a gone one fails at once, with ServerGone) and call `done` with the outcome; the
    call may come before this returns only for a gone server or an address uvloop refuses outright."""
    if server.gone:
        done(None, ServerGone(server))
        return
    CallbackConnect(loop, server, factory, timeout, deadlines, done)
