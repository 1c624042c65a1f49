"""tcp listeners relayed in C (ukproxy/native/tcp_relay.c): Python decides, C moves the bytes.

The engine owns each connection's two sockets from accept to close. Python hears of a connection twice:
when it is accepted (`NativeListener.accepted`: the balancer picks a server, VM pools may queue) and
when it ends (`NativeSession.closed`: metrics, passive health, the worker's counts), plus once per
failed connect, to try the next server as proxy/tcp.py does. A listener that needs what only tcp.py
has (PROXY protocol either way, sockets made across the backend namespace, cluster peers, server names
to resolve) stays on tcp.py, as does every listener when the module is not built, with
UKPROXY_PURE_PYTHON=1, or with `tcp_relay = "python"` on the listener. docs/architecture.md,
"Native paths".
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ukproxy import native
from ukproxy.edge.tcp_guard import Held, TcpGuard, release
from ukproxy.protocol import Event
from ukproxy.proxy.tcp import connect_failed
from ukproxy.upstream.group import UpstreamGroup

if TYPE_CHECKING:
    from ukproxy.config import ListenConfig
    from ukproxy.upstream.server import Server
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.tcp")

GONE = -1  # connect_failed's code when the server was cut off (not an errno)
RELAYED_IN_C = Event.TCP_RELAYED_IN_C  # ukproxy_worker_events{event="tcp_relayed_in_c:<listener>"}


def python_only(lc: ListenConfig, group: UpstreamGroup) -> str | None:
    """Why this tcp listener must stay on proxy/tcp.py, or None when the C relay can serve it."""
    if lc.tcp_relay == "python":
        return "tcp_relay = \"python\""
    if lc.proxy_protocol:
        return "PROXY protocol from clients"
    if group.config.proxy_protocol:
        return "PROXY protocol to the upstream"
    if group.make_socket is not None:
        return "servers across the backend namespace"
    if group.peers is not None:
        return "cluster peers"
    for server in group.servers:
        try:
            ipaddress.ip_address(server.host)
        except ValueError:
            return f"server {server.name} is a name, not an address"
    return None


class TcpRelay:
    """One worker's relay engine, watched by its event loop: one poll per wake-up serves every socket."""

    def __init__(self, module: ModuleType, state: WorkerState):
        self.state = state
        self.engine: Any = module.Engine()
        state.loop.add_reader(self.engine.fileno(), self.engine.poll)

    @classmethod
    def load(cls, state: WorkerState) -> TcpRelay | None:
        module = native.load("tcp_relay")
        return cls(module, state) if module is not None else None

    def listener(self, lc: ListenConfig, group: UpstreamGroup, multi_accept: bool,
                 guard: TcpGuard | None = None) -> NativeListener | None:
        why = python_only(lc, group)
        if why is not None:
            log.info("tcp listener %s: relayed in Python (%s)", lc.address, why)
            return None
        log.info("tcp listener %s: relayed in C", lc.address)
        return NativeListener(self, group, lc.address, multi_accept, guard)


class NativeListener:
    """A tcp listener whose connections the engine relays; the accept cycle hands them here."""

    def __init__(self, relay: TcpRelay, group: UpstreamGroup, name: str, multi_accept: bool,
                 guard: TcpGuard | None = None):
        self.relay = relay
        self.guard = guard  # allow/deny and limit_conn (edge/tcp_guard.py), checked at accept
        self.multi_accept = multi_accept  # accept all pending per wake-up, or one (nginx's multi_accept)
        self.state = relay.state
        self.group = group
        self.name = name

    def listen(self, fd: int, accepted: Any) -> Any:
        """Accept on `fd` in C (owned by the engine from now on); `accepted(conn)` counts and calls ours."""
        return self.relay.engine.listen(fd, accepted, self.multi_accept)

    def adopt(self, fd: int) -> None:
        """A connection accepted and counted by Python (the accept mutex's mode)."""
        self.relay.engine.adopt(fd, self.accepted)

    def accepted(self, conn: Any) -> NativeSession:
        return NativeSession(self, conn)


class NativeSession:
    """One relayed connection as Python sees it: its servers tried, the one in use, its end."""

    __slots__ = ("conn", "group", "held", "listener", "peer", "refused", "server", "state", "tried")

    def __init__(self, listener: NativeListener, conn: Any):
        self.conn = conn
        self.listener = listener
        self.state = listener.state
        self.group = listener.group
        self.tried: list[Server] = []
        self.server: Server | None = None  # connecting or connected to
        # the client's address, asked once and only when something wants it (gone with the socket)
        self.peer: tuple[str, int] | None = None
        self.held: Held | None = None  # limit_conn places, given back in `closed`
        self.refused = 0  # the guard's status (403, 503) for a connection it closed
        guard = listener.guard
        if self.group.keyed or self.state.access_log is not None or guard is not None:
            self.peer = conn.peername()
        conn.bind(self)
        self.state.splicing += 1  # stub_status "writing", as proxy/tcp.py counts a splice
        if guard is not None:
            self.refused, self.held = guard.admit(self.peer[0].encode() if self.peer else b"-")
            if self.refused:
                conn.close()  # before any connect upstream; the engine calls `closed` now
                return
        self._connect_next()

    # connecting

    def _connect_next(self) -> None:
        group = self.group
        if self.conn.closed:
            return
        if len(self.tried) >= group.config.tries:
            self._no_upstream()
            return
        key = self._balance_key() if group.keyed else None
        server = group.acquire_nowait(key, self.tried, self.state.loop.time())
        if server is not None:
            self._connect(server)
        elif group.vm_pool is not None:  # the pool may grow, or queue us: that waits
            self.state.loop.create_task(self._wait_for_server(key))
        else:
            self._no_upstream()

    async def _wait_for_server(self, key: bytes | None) -> None:
        server = await self.group.acquire(key, self.tried, self.state.loop.time())
        if server is None:
            if not self.conn.closed:
                self._no_upstream()
        elif self.conn.closed:
            self.group.release(server)
        else:
            self._connect(server)

    def _connect(self, server: Server) -> None:
        self.tried.append(server)
        if len(self.tried) > 1:
            self.state.upstream_retried(self.group.name)
        config = self.group.config
        code = GONE if server.gone else self.conn.connect(server.host, server.port, config.connect_timeout,
                                                          config.idle_timeout, config.half_close)
        if code:
            self._failed(server, code)
            self._connect_next()
            return
        self.server = server
        server.attach(self)
        self.state.upstream_opened()

    def connect_failed(self, code: int) -> None:
        """The engine's call: the connect to self.server failed (an errno, ETIMEDOUT at connect_timeout)."""
        server = self.server
        assert server is not None
        self.server = None
        server.detach(self)
        self.state.upstream_closed()
        self._failed(server, code)
        self._connect_next()

    def _failed(self, server: Server, code: int) -> None:
        why = "server gone" if code == GONE else errno.errorcode.get(code, str(code))
        connect_failed(self.state, self.group, server, code == errno.ETIMEDOUT, why)

    def cut_off(self) -> None:
        """The server is gone (Server.cut_off): a connect under way fails over to the next server; a
        relayed connection ends now rather than when TCP notices."""
        if self.conn.cancel_connect():
            self.connect_failed(GONE)
        else:
            self.conn.close()

    def _no_upstream(self) -> None:
        log.error("upstream %s: no server could be reached for %s (tried %d)",
                  self.group.name, self._peer_text(), len(self.tried))
        self.state.no_upstream(self.group.name)
        self.conn.close()

    # the end, the engine's call

    def closed(self, reason: str) -> None:
        state, conn, group = self.state, self.conn, self.group
        state.connection_closed()
        state.splicing -= 1
        if self.held is not None:
            release(self.held)
            self.held = None
        server = self.server
        connect_time = conn.connect_time
        upstream_addr = None
        if server is not None:
            self.server = None
            server.detach(self)
            group.release(server)
            state.upstream_closed()
            if connect_time is not None:  # else closed while connecting (the client went): no one's failure
                upstream_addr = server.name
                server.record_success(connect_time)  # connect time feeds least_time
        if reason == "idle":
            log.info("closing idle tcp connection from %s", self._peer_text())
            state.timeout_fired("idle")
        client = self.peer[0] if self.peer else "-"
        state.count(RELAYED_IN_C, self.listener.name)
        status = self.refused or (200 if upstream_addr is not None else 502)
        state.tcp_session_finished(self.listener.name, group.name, status,
                                   conn.age, connect_time, upstream_addr, client, conn.bytes_sent,
                                   conn.bytes_received)

    def _balance_key(self) -> bytes | None:
        return self.peer[0].encode() if self.peer else None

    def _peer_text(self) -> str:
        peer = self.peer or self.conn.peername()
        return f"{peer[0]}:{peer[1]}" if peer else "?"


