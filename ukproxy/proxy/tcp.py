"""L4 proxying: splice bytes both ways between a client and one upstream connection.

Two asyncio Protocols back to back. Flow control: when one side's write buffer passes its
high-water mark, reading from the other side pauses until it drains. Half-close is passed on
(EOF one way leaves the other way open) and the pair closes once both ways are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ukproxy.edge.proxy_protocol import header_bytes
from ukproxy.edge.tcp_guard import Held, TcpGuard, release
from ukproxy.upstream.connect import connect
from ukproxy.upstream.connect_callback import start_connect
from ukproxy.upstream.group import UpstreamGroup

if TYPE_CHECKING:
    from ukproxy.upstream.server import Server
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.tcp")

# Client bytes held while the upstream connects before the client is paused: a request's first bytes
# usually come first, and pausing and resuming for them cost two epoll changes per connection.
PENDING_LIMIT: Final = 65536


def tcp_protocol_factory(state: WorkerState, group: UpstreamGroup, listener: str,
                         guard: TcpGuard | None = None) -> Callable[[], asyncio.Protocol]:
    """A tcp listener's protocol factory: compiled with this module, and the listener's name made once."""
    return lambda: TcpClientSide(state, group, listener, guard)


def connect_failed(state: WorkerState, group: UpstreamGroup, server: Server, timed_out: bool, why: str) -> None:
    """A connect to `server` failed: its slot given back, the failure held against it (passive health),
    counted and logged. Both tcp relays' bookkeeping (this module's and proxy/tcp_native.py's)."""
    group.release(server)
    server.record_failure(state.loop.time())
    reason = "timeout" if timed_out else "connect"
    state.upstream_failed(group.name, reason)
    log.warning("upstream %s server %s: %s (%s)", group.name, server.name, reason, why)


class UpstreamSide(asyncio.Protocol):
    """The upstream half of a spliced pair: forwards to the client side."""

    __slots__ = ("client", "server", "transport")

    def __init__(self, client: TcpClientSide, server: Server):
        self.client = client
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.attach(self)

    def cut_off(self) -> None:
        """The server is gone: end the splice now rather than when TCP notices."""
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(data)

    def eof_received(self) -> bool:
        self.client.upstream_eof()
        return True

    def pause_writing(self) -> None:
        self.client.pause_client_reading()

    def resume_writing(self) -> None:
        self.client.resume_client_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.detach(self)
        self.client.upstream_lost(exc)
        self.client.upstream = None  # a reference cycle no more: the pair is freed without the cyclic collector


class TcpClientSide(asyncio.Protocol):
    """One client connection on a tcp listener, and the upstream connection it is spliced to."""

    def __init__(self, state: WorkerState, group: UpstreamGroup, listener: str = "", guard: TcpGuard | None = None):
        self.state = state
        self.group = group
        self.guard = guard  # the listener's allow/deny and limit_conn (edge/tcp_guard.py), checked before connecting
        self.held: Held | None = None  # limit_conn places, given back when the connection ends
        self.refused = 0  # the guard's status for a connection it closed (403, 503)
        self.loop = state.loop
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamSide | None = None
        self.server: Server | None = None
        self.tried: list[Server] = []  # the servers this connection's connects went to
        self.pending: list[bytes] = []  # client bytes that arrived before the upstream connected
        self.pending_bytes = 0
        self.held_back = False  # reading paused until the upstream exists (more than PENDING_LIMIT came)
        self.client_eof = False
        self.upstream_eof_seen = False
        self.closed = False
        self.last_activity = 0.0
        self.idle_bucket = 0  # our place in the worker's deadline wheel (proxy/deadline_wheel.py); 0: none
        # For the access log and metrics (WorkerState.tcp_session_finished).
        self.listener = listener
        self.started = self.loop.time()
        self.bytes_received = 0  # from the client
        self.bytes_sent = 0  # to the client
        self.upstream_addr: str | None = None
        self.connect_time: float | None = None
        self._peer: tuple[str, int] | None = None  # getpeername once, and only if something wants it
        self._proxied_to: tuple[str, int] | None = None  # the destination a PROXY header named

    # client side

    def set_proxied_addresses(self, source: tuple[str, int], destination: tuple[str, int] | None) -> None:
        """A PROXY protocol header named the client (edge/proxy_protocol.py): logs, ip_hash and a PROXY
        header upstream use it. Called right after connection_made, before a keyed connect starts."""
        self._peer = source
        self._proxied_to = destination

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_activity = self.loop.time()
        self.state.splicing += 1  # a splice is busy both ways: stub_status "writing"
        if self.group.keyed or self.guard is not None:
            # The key and the guard go by the client's address, which a PROXY header names just after this call.
            self.loop.call_soon(self._admit)
        else:
            self._connect_next()

    def _admit(self) -> None:
        """The guard's verdict, once per connection before any byte goes upstream: a refused one is closed
        (nothing to answer in L4), its bytes dropped."""
        guard = self.guard
        if guard is not None and not self.closed:
            peer = self._peername()
            self.refused, self.held = guard.admit(peer[0].encode() if peer else b"-")
            if self.refused:
                self.pending.clear()
                self.transport.close()  # type: ignore[union-attr]
                return
        self._connect_next()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_received += len(data)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
        else:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > PENDING_LIMIT and not self.held_back:
                # Hold the client back until the upstream exists: bounded buffering.
                self.held_back = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.client_eof = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            # Both ways done: the close says it (a shutdown first would be one more system call).
            if not self.upstream_eof_seen and upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            self._close_if_done()
        return True  # keep the connection half-open: the answer may still be coming

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.connection_closed()
        self.state.splicing -= 1
        if self.held is not None:
            release(self.held)
            self.held = None
        self._session_finished()
        self._cancel_idle_timer()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    # upstream side, called by UpstreamSide

    def from_upstream(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_sent += len(data)
        self.transport.write(data)  # type: ignore[union-attr]

    def upstream_eof(self) -> None:
        self.upstream_eof_seen = True
        if not self.group.config.half_close:
            # The server is done, so is the pair (nginx stream's default): close() still sends what is
            # buffered, and costs no shutdown, nor a wake-up for the client's FIN.
            if self.transport is not None:
                self.transport.close()
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.close()
            return
        if self.transport is not None and not self.client_eof and not self.transport.is_closing() \
                and self.transport.can_write_eof():
            self.transport.write_eof()
        self._close_if_done()

    def pause_client_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_client_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.server is not None:
            self.group.release(self.server)
            self.state.upstream_closed()
            self.server = None
        if self.transport is not None:
            self.transport.close()

    # connecting

    def _connect_next(self) -> None:
        """Connect to the next server. While the balancer has one at hand and the socket is a plain one (the
        usual case) this is callbacks only (upstream/connect_callback.py): no task per connection."""
        group = self.group
        if self.closed:
            return
        if len(self.tried) >= group.config.tries:
            self._no_upstream()
            return
        server = None
        if group.make_socket is None:
            key = self._balance_key() if group.keyed else None
            server = group.acquire_nowait(key, self.tried, self.loop.time())
        if server is None:  # a VM pool may grow or queue, or a peer node's socket is made: that waits
            self.loop.create_task(self._connect_upstream())
            return
        upstream = self._upstream_for(server)
        started = self.loop.time()
        start_connect(self.loop, server, lambda: upstream, group.config.connect_timeout, self.state.deadlines,
                      lambda transport, error: self._connect_done(server, upstream, started, error))

    def _connect_done(self, server: Server, upstream: UpstreamSide, started: float,
                      error: BaseException | None) -> None:
        if error is not None:
            self._connect_failed(server, error)
            self._connect_next()
        else:
            self._spliced(server, upstream, started)

    async def _connect_upstream(self) -> None:
        """The connect loop when a server must be waited for (a VM pool) or a socket made first."""
        group = self.group
        key = self._balance_key() if group.keyed else None
        while len(self.tried) < group.config.tries:
            server = await group.acquire(key, self.tried, self.loop.time())
            if server is None:
                break
            upstream = self._upstream_for(server)
            started = self.loop.time()
            try:
                # The factory runs before this await returns: it cannot see a later iteration's upstream.
                await connect(self.loop, server, lambda: upstream, group.config.connect_timeout,  # noqa: B023
                              group.make_socket, self.state.deadlines)
            except (TimeoutError, OSError) as e:
                self._connect_failed(server, e)
                if self.closed:
                    return
                continue
            self._spliced(server, upstream, started)
            return
        self._no_upstream()

    def _upstream_for(self, server: Server) -> UpstreamSide:
        self.tried.append(server)
        if len(self.tried) > 1:
            self.state.upstream_retried(self.group.name)
        return UpstreamSide(self, server)

    def _connect_failed(self, server: Server, e: BaseException) -> None:
        connect_failed(self.state, self.group, server, isinstance(e, TimeoutError), str(e) or "timed out")

    def _spliced(self, server: Server, upstream: UpstreamSide, started: float) -> None:
        """Connected: send what the client sent meanwhile, and splice from now on."""
        if self.closed:  # the client left while we were connecting
            self.group.release(server)
            upstream.transport.close()  # type: ignore[union-attr]
            return
        self.connect_time = self.loop.time() - started
        self.upstream_addr = server.name
        server.record_success(self.connect_time)  # connect time feeds least_time
        self.state.upstream_opened()
        self.server = server
        self.upstream = upstream
        if self.group.config.proxy_protocol:  # the upstream asked for a PROXY header (edge/proxy_protocol.py)
            upstream.transport.write(self._proxy_header(self.group.config.proxy_protocol))  # type: ignore[union-attr]
        for chunk in self.pending:
            upstream.transport.write(chunk)  # type: ignore[union-attr]
        self.pending.clear()
        if self.client_eof:
            upstream.transport.write_eof()  # type: ignore[union-attr]
        elif self.held_back:
            self.held_back = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._arm_idle_timer()

    def _no_upstream(self) -> None:
        log.error("upstream %s: no server could be reached for %s (tried %d)",
                  self.group.name, self._peer_text(), len(self.tried))
        self.state.no_upstream(self.group.name)
        if self.transport is not None:
            self.transport.close()

    def _peername(self) -> tuple[str, int] | None:
        if self._peer is None and self.transport is not None:
            self._peer = self.transport.get_extra_info("peername")
        return self._peer

    def _proxy_header(self, version: int) -> bytes:
        destination = self._proxied_to
        if destination is None and self.transport is not None:
            destination = self.transport.get_extra_info("sockname")
        return header_bytes(version, self._peername(), destination)

    def _balance_key(self) -> bytes | None:
        peer = self._peername()
        return peer[0].encode() if peer else None

    def _peer_text(self) -> str:
        peer = self._peername()
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    # closing

    def _session_finished(self) -> None:
        peer = self._peername() if self.state.access_log is not None else None  # only the access log names it
        self.state.tcp_session_finished(
            self.listener, self.group.name, self.refused or (200 if self.upstream_addr is not None else 502),
            self.loop.time() - self.started, self.connect_time, self.upstream_addr,
            peer[0] if peer else "-", self.bytes_sent, self.bytes_received)

    def _close_if_done(self) -> None:
        if self.client_eof and self.upstream_eof_seen:
            if self.transport is not None:
                self.transport.close()
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.close()

    def _arm_idle_timer(self) -> None:
        timeout = self.group.config.idle_timeout
        if timeout > 0:
            self.idle_bucket = self.state.deadlines.add(self, self.last_activity + timeout)

    def deadline_reached(self) -> None:
        """The deadline wheel's call: idle for idle_timeout? Re-armed lazily from the last activity, so data
        never touches the timer."""
        self.idle_bucket = 0
        if self.closed:
            return
        if self.loop.time() - self.last_activity >= self.group.config.idle_timeout:
            log.info("closing idle tcp connection from %s", self._peer_text())
            self.state.timeout_fired("idle")
            self.transport.close()  # type: ignore[union-attr]
        else:
            self._arm_idle_timer()

    def _cancel_idle_timer(self) -> None:
        if self.idle_bucket:
            self.state.deadlines.remove(self, self.idle_bucket)
            self.idle_bucket = 0
