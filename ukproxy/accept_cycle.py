"""A worker's accept cycle on its event loop, as Nginx's ngx_process_events_and_timers runs it.

With the mutex: a turn either skips (disabled counting), or tries the lock; the holder watches the
listening sockets, accepts (all pending with multi_accept), releases the lock and takes its next turn
once the callbacks already queued have run. A worker without the lock takes a turn again within
`accept_mutex_delay`, and sooner when one of its connections closes.

Without the mutex every worker serves its sockets (a shared one, or its own SO_REUSEPORT one)
through uvloop's own server, which accepts in C: a connection costs no Python until its protocol
exists. In every mode a worker at `worker_connections` stops accepting until a connection closes.
A tcp listener relayed in C (proxy/tcp_native.py), or a TLS listener served in C (tls/native.py), is
accepted in C in that mode, and its connections accepted here are handed to the C engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ukproxy.accept import AcceptMutex, DisabledCounter, accept_disabled
from ukproxy.protocol import Event
from ukproxy.proxy.tcp_native import NativeListener
from ukproxy.tls.native import NativeTlsListener
from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.accept")


class _CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@dataclass
class Listener:
    sock: socket.socket
    protocol_factory: Callable[[], asyncio.Protocol]
    name: str
    backlog: int  # as configured: uvloop's server listens on the socket again, with this
    # served in C: a tcp listener relayed (proxy/tcp_native.py) or a TLS listener (tls/native.py); either
    # has listen(fd, accepted) and adopt(fd)
    native: NativeListener | NativeTlsListener | None = None


class AcceptCycle:
    def __init__(
        self,
        state: WorkerState,
        listeners: list[Listener],
        mutex: AcceptMutex | None,
        delay: float,
        multi_accept: bool,
    ):
        self.state = state
        self.loop = state.loop
        self.listeners = listeners
        self.mutex = mutex
        self.delay = delay
        self.multi_accept = multi_accept
        self.disabled = DisabledCounter(state.worker_connections)
        self.watching = False
        self.running = False
        self.acquisitions = 0
        self._timer: asyncio.TimerHandle | None = None
        self._turn_soon = False
        self.servers: list[Any] = []  # uvloop's servers, and the C relay's listening sockets: close() each
        state.on_connection_closed = self._connection_closed
        if mutex is None:
            state.on_full = self._full

    def _full(self) -> None:
        self.loop.call_soon(self._pause_servers)

    def start(self) -> None:
        self.running = True
        if self.mutex is None:
            self.loop.create_task(self._serve())
        else:
            self._turn()

    # without the mutex: uvloop's servers on duplicates of the listening sockets

    async def _serve(self) -> None:
        if self.servers or not self.running or self.state.free_connections <= 0:
            return
        self.watching = True
        servers: list[Any] = []
        for listener in self.listeners:
            # A duplicate: closing a server (to pause at worker_connections) must not close our socket.
            if listener.native is not None:  # accepted in C, the duplicate the relay's own
                servers.append(listener.native.listen(os.dup(listener.sock.fileno()),
                                                      self._counting_accept(listener.native)))
                continue
            sock = socket.socket(fileno=os.dup(listener.sock.fileno()))
            servers.append(await self.loop.create_server(self._counting_factory(listener), sock=sock,
                                                         backlog=listener.backlog))
        self.servers = servers
        if not self.running or self.state.free_connections <= 0:
            self._pause_servers()

    def _counting_factory(self, listener: Listener) -> Callable[[], asyncio.Protocol]:
        state = self.state
        make = listener.protocol_factory

        def factory() -> asyncio.Protocol:
            if state.free_connections <= 0:
                # Accepted in the same batch as the one that filled us: Nginx's "worker_connections are
                # not enough". Closed at once, so the limit holds.
                state.count(Event.ACCEPT_OVER_LIMIT)
                return _CloseAtOnce()
            state.accepted += 1
            state.connection_opened()
            if state.free_connections <= 0:
                self.loop.call_soon(self._pause_servers)  # not inside uvloop's accept callback
            return make()

        return factory

    def _counting_accept(self, native: NativeListener | NativeTlsListener) -> Callable[[Any], Any]:
        """As _counting_factory, for the C relay's accepts: None refuses (the relay closes it)."""
        state = self.state
        accepted = native.accepted

        def accept(conn: Any) -> Any:
            if state.free_connections <= 0:
                state.count(Event.ACCEPT_OVER_LIMIT)
                return None
            state.accepted += 1
            state.connection_opened()
            if state.free_connections <= 0:
                self.loop.call_soon(self._pause_servers)  # not inside the relay's poll
            return accepted(conn)

        return accept

    def _pause_servers(self) -> None:
        if not self.servers:
            return
        for server in self.servers:
            server.close()
        self.servers = []
        self.watching = False

    def stop(self) -> None:
        """Stop accepting for good (graceful shutdown): release the lock for the other workers."""
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
        self._pause_servers()
        self._unwatch()
        if self.mutex is not None:
            self.mutex.unlock()

    # the mutex

    def _turn(self) -> None:
        self._timer = None
        self._turn_soon = False
        if not self.running:
            return
        assert self.mutex is not None
        if self.disabled.should_skip():
            # Connections may have closed since the last accept: never skip more than the load says.
            self.disabled.value = min(self.disabled.value, self._disabled_now())
            self._unwatch()
            self._schedule_turn()
            return
        if self.state.free_connections > 0 and self.mutex.try_lock():
            self.acquisitions += 1
            self._watch()
        else:
            self._unwatch()
            self._schedule_turn()

    def _schedule_turn(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.delay, self._turn)

    def _disabled_now(self) -> int:
        return accept_disabled(self.state.worker_connections, self.state.free_connections)

    def _connection_closed(self) -> None:
        """Our own work finished: another turn now rather than at the next timer."""
        if not self.running:
            return
        if self.mutex is None:
            if not self.watching and self.state.free_connections > 0:
                self.watching = True  # one resume at a time
                self.loop.create_task(self._resume())
        elif not self.mutex.held and not self._turn_soon:
            self._turn_soon = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.loop.call_soon(self._turn)

    async def _resume(self) -> None:
        self.watching = False
        await self._serve()

    # the listening sockets

    def _watch(self) -> None:
        if not self.watching:
            for listener in self.listeners:
                self.loop.add_reader(listener.sock.fileno(), self._accept, listener)
            self.watching = True

    def _unwatch(self) -> None:
        if self.watching:
            for listener in self.listeners:
                self.loop.remove_reader(listener.sock.fileno())
            self.watching = False

    def _accept(self, listener: Listener) -> None:
        if self.mutex is not None and not self.mutex.held:
            return  # released after the last accept; the next turn decides
        state = self.state
        while state.free_connections > 0:
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # EMFILE and friends: log, back off to the next turn
                log.error("accept on %s failed: %s", listener.name, e)
                state.count(Event.ACCEPT_ERROR)
                break
            state.accepted += 1
            state.connection_opened()
            if listener.native is not None:
                listener.native.adopt(conn.detach())
                if not self.multi_accept:
                    break
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self.loop.connect_accepted_socket(listener.protocol_factory, sock=conn))
            task.add_done_callback(self._adopted)
            if not self.multi_accept:
                break
        self.disabled.update(state.free_connections)
        if self.mutex is not None:
            self.mutex.unlock()
            self._turn_soon = True
            self.loop.call_soon(self._turn)
        elif state.free_connections <= 0:
            self._unwatch()

    def _adopted(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            # The connection never reached a protocol: give its slot back.
            log.warning("could not adopt an accepted connection: %s", task.exception() if not task.cancelled() else "")
            self.state.connection_closed()
