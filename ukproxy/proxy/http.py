"""L7 proxying for `protocol = "http"` listeners: one client connection, its requests one after another.

The connection parses requests (`http_request.RequestReader`) into a queue of events and hands them
to one exchange at a time (`http_exchange.Exchange`, or a `LocalReply` when the proxy answers itself),
so pipelined requests are answered in order and the next request's bytes never reach the current one.
Reading pauses while a later request waits in the queue, while the current request's body has nowhere
to go, and while the upstream's send buffer is above its high-water mark; the queue is therefore
bounded by one read. Timers: client_header_timeout from a request's first byte (the connection's
start for the first request) to the end of its head; client_body_timeout between two reads of a body
(and while the client does not take our writes); keepalive_timeout while idle between requests.
The connection has one timer for all of them, armed at most `HttpSite.timer_tick` ahead and re-checked when it
fires, so moving from one phase to the next only changes a kind and a deadline (no timer per request). That
timer is a place in the worker's deadline wheel (proxy/deadline_wheel.py), not a loop timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ukproxy.config import Config, ListenConfig
from ukproxy.edge.compress_config import SiteCompression
from ukproxy.edge.guard import Admission, Guards
from ukproxy.edge.http_edge import EdgePlan, EdgeSite
from ukproxy.edge.realip import RealIp
from ukproxy.protocol import Event
from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_exchange import ClientSide, Exchange
from ukproxy.proxy.http_request import BODY, END, ERROR, HEAD, TAIL, HttpError, RequestHead, RequestReader
from ukproxy.proxy.http_tunnel import Tunnel
from ukproxy.proxy.routing import Router
from ukproxy.tls.redirect import https_location
from ukproxy.upstream.group import UpstreamGroup
from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.http")

LINGER_TIMEOUT: Final = 2.0  # after our last answer on a connection the client may still be sending: read and drop



def http_protocol_factory(
    state: WorkerState, config: Config, listen: ListenConfig, groups: dict[str, UpstreamGroup]
) -> Callable[[], asyncio.Protocol]:
    site = HttpSite(state, config, listen, groups)
    if listen.http2:  # HTTP/2 as well: the first bytes (or ALPN) choose (h2_select.py)
        from ukproxy.proxy.h2_select import VersionSelector

        return lambda: VersionSelector(site)
    return lambda: HttpClientConnection(site)


class HttpSite:
    """What every connection of one http listener shares: limits, routes and upstreams."""

    def __init__(self, state: WorkerState, config: Config, listen: ListenConfig, groups: dict[str, UpstreamGroup]):
        self.state = state
        self.limits = config.http
        self.listener = listen.address
        self.router = Router(config.routes, listen.upstream)
        self.groups = groups
        # [real_ip]: who may tell us the client's address (edge/realip.py); None costs nothing per request.
        self.real_ip = RealIp.from_config(config.real_ip)
        # Header, rewrite and return rules, request ids, forwarding headers (edge/http_edge.py); None: none here.
        self.edge = EdgeSite.from_config(config, self.router, self.real_ip)
        # TLS (tls/): the scheme upstreams hear (X-Forwarded-Proto), HSTS, and a plain listener's redirect.
        self.scheme = b"https" if listen.tls is not None else b"http"
        if self.edge is not None:
            self.edge.scheme = self.scheme
        hsts = listen.tls.hsts if listen.tls is not None else None
        self.added_headers = b"Strict-Transport-Security: %s\r\n" % hsts.encode() if hsts else b""
        self.https_redirect = listen.https_redirect
        # limit_req, limit_conn, allow/deny, basic auth (edge/guard.py); None when no rule applies here.
        self.guards = Guards.from_config(config, listen, state.worker_id)
        # gzip/brotli (edge/compress.py): None when no route of this listener compresses, and then no request looks.
        compression = SiteCompression(config.http.compress, listen.compress, config.routes)
        self.compression = compression if compression.compresses else None
        limits = self.limits
        timeouts = [t for t in (limits.client_header_timeout, limits.client_body_timeout,
                                limits.keepalive_timeout) if t > 0]
        # A connection's timer is never armed further ahead than this, so the next phase's deadline is never earlier.
        self.timer_tick = min(timeouts, default=60.0)


class LocalReply:
    """The proxy's own answer to a request it forwards nowhere (no route): the body is read and dropped."""

    upstream_name = None
    upstream_time = None
    upstream_addr = None
    ended_at = 0.0
    plan: EdgePlan | None = None  # a return or redirect rule's answer (edge/http_edge.py)

    def __init__(self, client: HttpClientConnection, head: RequestHead, status: int, started_at: float,
                 client_ip: bytes, headers: bytes = b""):
        self.client = client
        self.headers = headers  # extra header lines of the answer (a 401's WWW-Authenticate)
        self.head = head
        self.client_ip = client_ip  # HttpClientConnection.client_address: for the log
        self.status = status
        self.started_at = started_at
        self.body_done = not head.has_body
        self.finished = False
        self.bytes_sent = 0

    def begin(self) -> None:
        keep_alive = self.head.keep_alive and self.client.may_keep_alive()
        if self.plan is not None:
            reply = self.plan.reply_bytes(keep_alive, self.head.method == b"HEAD")
        else:
            reply = msg.error_response(self.status, keep_alive, head_only=self.head.method == b"HEAD")
        if self.headers:
            reply = reply.replace(b"\r\n", b"\r\n" + self.headers, 1)
        self.client.write(reply)
        if self.body_done:
            self._finish(keep_alive)

    def request_body(self, data: bytes) -> None:
        pass

    def request_tail(self, data: bytes) -> None:
        pass

    def request_end(self) -> None:
        self.body_done = True
        self._finish(self.head.keep_alive and self.client.may_keep_alive())

    def request_error(self, error: HttpError) -> None:
        self._finish(False)

    def client_gone(self) -> None:
        self._finish(False)

    def client_write_paused(self) -> None:
        pass

    def client_write_resumed(self) -> None:
        pass

    def _finish(self, keep_alive: bool) -> None:
        if not self.finished:
            self.finished = True
            self.client.exchange_finished(self, keep_alive)


DRAIN_GRACE: Final = 1.0  # seconds an idle keep-alive connection of a stopping worker may still bring a request


class HttpClientConnection(ClientSide):
    def __init__(self, site: HttpSite):
        self.site = site
        self.state = site.state
        self.loop = site.state.loop
        self.limits = site.limits
        self.transport: asyncio.Transport | None = None
        self.events: deque[tuple[int, Any]] = deque()
        self.reader = RequestReader(site.limits, self.events)
        self.exchange: Exchange | LocalReply | None = None
        self.tunnel: Tunnel | None = None  # after a 101: the connection carries bytes both ways, not requests
        self.admission: Admission | None = None  # the current request's limit_conn places (edge/guard.py)
        self.scheme = site.scheme
        self.added_headers = site.added_headers
        self.tls_version: str | None = None  # "TLSv1.3" and the like over TLS, for the access log
        self.ssl_object: Any = None  # over TLS: what $ssl_client_* are read from (tls/client_certs.py)
        self.requests = 0
        self.closed = False
        self.lingering = False
        self.writing_paused = False
        self.peer_ip = b"-"
        self.peer = "-"
        self._pause_reasons: set[str] = set()
        self._dispatching = False
        self._timer_bucket = 0  # our place in the worker's deadline wheel (proxy/deadline_wheel.py); 0: none
        self._timer_at = 0.0  # when the wheel calls deadline_reached
        self._timer_kind = ""  # what the deadline is for; "" for nothing
        self._timeout = 0.0
        self._deadline = 0.0  # for "body" and "tunnel", from the last read instead
        self._last_read = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.peer = f"{peer[0]}:{peer[1]}"
        if self.scheme == b"https":
            self.ssl_object = transport.get_extra_info("ssl_object")
            self.tls_version = self.ssl_object.version()
        self._last_read = self.loop.time()
        self._set_timer("header", self.limits.client_header_timeout)
        self.state.drainable.add(self)

    def set_proxied_addresses(self, source: tuple[str, int], destination: tuple[str, int] | None) -> None:
        """A PROXY protocol header named the client (edge/proxy_protocol.py): it is this connection's peer."""
        self.peer_ip = source[0].encode()
        self.peer = f"{source[0]}:{source[1]}"

    def drain(self) -> None:
        """The worker is stopping: no more keep-alive. A request in flight is answered with
        `Connection: close`; an idle connection gets a short grace for a request already on its way
        (closing at once could cut it), then closes."""
        if self._timer_kind == "keepalive" and self.exchange is None and not self.closed:
            self._set_timer("drain", min(self.limits.keepalive_timeout, DRAIN_GRACE))

    def data_received(self, data: bytes) -> None:
        self._last_read = now = self.loop.time()  # the one clock reading for what this read starts
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.lingering:
            return
        if self._timer_kind in ("keepalive", "drain"):
            self._set_timer("header", self.limits.client_header_timeout, now)  # a new request has begun
        self.reader.feed(data)
        events = self.events
        if len(events) == 2 and self.exchange is None and not self._dispatching:
            # The usual read: one whole request without a body. Straight to its exchange.
            (kind, head), (end, _) = events
            if kind == HEAD and end == END and not head.has_body:
                events.clear()
                self._start(head)
                return
        self._dispatch()

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            self.tunnel.client_eof()
            return True
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            if not exchange.body_done:
                exchange.request_error(HttpError(400, "client closed the connection inside the body"))
                return False
            self.reader.done = True  # answer this request, then close
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.drainable.discard(self)
        self.state.connection_closed()
        self._stop_timer()
        self._cancel_stall_timer()
        self.reader.close()
        exchange = self.exchange or self.tunnel
        if exchange is not None:
            exchange.client_gone()
        if self.admission is not None:  # given back by exchange_finished, unless no exchange ever ended
            self.admission.release()
            self.admission = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        exchange = self.exchange or self.tunnel
        if exchange is not None:
            exchange.client_write_paused()
        self._stall_timer = watch_write_stall(self.state, self.limits.client_body_timeout, self.transport, self.peer,
                                              "http")

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._cancel_stall_timer()
        exchange = self.exchange or self.tunnel
        if exchange is not None:
            exchange.client_write_resumed()

    # used by exchanges

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)
            if self.tunnel is not None:
                self._last_read = self.loop.time()  # a tunnel is idle only when neither side talks

    def write_eof(self) -> None:
        if not self.closed and self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()

    def may_keep_alive(self) -> bool:
        # A reader that is done (an error, EOF, "close") still owes answers to the requests already queued.
        return (self.requests < self.limits.keepalive_requests and not (self.reader.done and not self.events)
                and not self.state.draining)

    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and not self.closed and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._pause_reasons:
            self._pause_reasons.discard(reason)
            if not self._pause_reasons and not self.closed and self.transport is not None:
                self._last_read = self.loop.time()  # the pause was ours, not the client's
                self.transport.resume_reading()

    def start_tunnel(self, tunnel: Tunnel, idle_timeout: float) -> None:
        self.tunnel = tunnel
        self.exchange = None
        self.events.clear()
        for reason in list(self._pause_reasons):
            if reason != "upstream":
                self.resume_reading(reason)
        self._drop_deadline()
        if idle_timeout > 0:
            self._set_timer("tunnel", idle_timeout)

    def exchange_finished(self, exchange: Exchange | LocalReply, keep_alive: bool, abort: bool = False) -> None:
        if self.exchange is exchange:
            self.exchange = None
        elif self.tunnel is not None:
            self.tunnel = None  # its exchange ends with it
        if self.admission is not None:
            self.admission.release()
            self.admission = None
        now = exchange.ended_at or self.loop.time()
        self.state.request_finished(self.site.listener, exchange.upstream_name, exchange.status,
                                    now - exchange.started_at, exchange.upstream_time, exchange.upstream_addr,
                                    exchange.head, exchange.client_ip, exchange.bytes_sent, self.tls_version)
        if self.closed:
            return
        if not keep_alive or (self.reader.done and not self.events):
            self._finish_connection(exchange.body_done and not abort)
            return
        if self.events:
            self._dispatch()
        if self.exchange is None and not self.closed:
            if self.reader.in_head:
                self._set_timer("header", self.limits.client_header_timeout, now)
            else:
                self._set_timer("keepalive", self.limits.keepalive_timeout, now)

    def phase(self) -> str:
        if self.exchange is not None or self.tunnel is not None:
            return "writing"
        return "reading" if self.reader.in_head else "waiting"

    # requests, in order

    def _dispatch(self) -> None:
        if self._dispatching:
            return  # an exchange finished while we were handing it events: the outer loop carries on
        self._dispatching = True
        try:
            self._dispatch_events()
        finally:
            self._dispatching = False
        if self.events and self.exchange is not None:
            self.pause_reading("inbox")  # a later request waits: read no further until it is its turn
        else:
            self.resume_reading("inbox")

    def _dispatch_events(self) -> None:
        events = self.events
        while events and not self.closed and not self.lingering:
            kind, value = events[0]
            exchange = self.exchange
            if kind == HEAD:
                if exchange is not None:
                    return
                events.popleft()
                self._start(value)
            elif kind == BODY:
                events.popleft()
                if exchange is not None:
                    exchange.request_body(value)
            elif kind == END:
                events.popleft()
                if exchange is not None:
                    if self._timer_kind == "body":
                        self._drop_deadline()
                    exchange.request_end()
            elif kind == TAIL:
                events.popleft()
                if exchange is not None:
                    exchange.request_tail(value)
            elif kind == ERROR:
                if exchange is not None and exchange.body_done:
                    return  # the next request is bad: answer it after the current one
                events.popleft()
                if exchange is not None:
                    exchange.request_error(value)
                else:
                    self._reject(value)

    def client_address(self, head: RequestHead) -> bytes:
        """THE client address of a request: what limits, access control, the access log, ip_hash/hash and
        X-Real-IP key on. The TCP peer (or the PROXY protocol's source, `peer_ip`), or with [real_ip]
        the address trusted proxies forwarded (edge/realip.py). `_start` calls it once per request."""
        real_ip = self.site.real_ip
        return self.peer_ip if real_ip is None else real_ip.client_ip(self.peer_ip, head)

    def _start(self, head: RequestHead) -> None:
        self.requests += 1
        client_ip = self.client_address(head)
        match = self.site.router.match(head.host, head.path)
        plan = None
        if self.site.edge is not None:  # rewrite, return and header rules, request ids (edge/http_edge.py)
            plan = self.site.edge.plan(head, match, client_ip, self.peer_ip)
            if plan is not None:  # None: no rule for this request, it goes as any other
                match = plan.match
                plan.ssl_object = self.ssl_object
        admission = None
        if self.site.guards is not None:  # allow/deny, limit_conn, limit_req, basic auth (edge/guard.py)
            admission = self.site.guards.admit(match.route if match is not None else None, client_ip, head)
        exchange: Exchange | LocalReply
        if self.site.https_redirect is not None:  # https_redirect: every request goes to https (tls/redirect.py)
            exchange = LocalReply(self, head, 301, self._last_read, client_ip,
                                  https_location(head, self.site.https_redirect, self.site.listener))
        elif admission is not None and admission.status:
            exchange = LocalReply(self, head, admission.status, self._last_read, client_ip,
                                  admission.headers if plan is None
                                  else admission.headers + plan.answer_lines(admission.status))
        elif match is None or (plan is not None and plan.reply is not None):
            exchange = LocalReply(self, head, 404 if plan is None else plan.status, self._last_read, client_ip)
            exchange.plan = plan
        else:
            if head.expect_continue and head.has_body and head.version == b"1.1":
                self.write(msg.CONTINUE)
            group = self.site.groups[match.upstream]
            path = match.path if plan is None or plan.path is None else plan.path
            exchange = Exchange(self, self.state, head, path, group, self._last_read, client_ip, plan)
            if self.site.compression is not None:
                exchange.compress = self.site.compression.lookup(match.route)
        self.exchange = exchange
        if admission is not None and admission.held:
            self.admission = admission
        if admission is not None and admission.delay > 0.0 and not admission.status:
            self.loop.call_later(admission.delay, self._begin_delayed, exchange)  # limit_req keeps to its rate
        else:
            exchange.begin()
            if exchange.finished:  # over at once (and self.exchange is None again)
                return
        if not exchange.body_done:
            self._set_timer("body", self.limits.client_body_timeout, exchange.started_at)
        else:
            self._drop_deadline()

    def _begin_delayed(self, exchange: Exchange | LocalReply) -> None:
        """A request limit_req delayed goes on now, unless it ended meanwhile (its client left)."""
        if self.exchange is exchange and not exchange.finished:
            exchange.begin()

    def _reject(self, error: HttpError) -> None:
        """A request we will not read: answer its status, count it, and close."""
        self.state.count(Event.HTTP_REJECTED, str(error.status))
        log.info("http: %d %s from %s", error.status, error.reason, self.peer)
        self.write(msg.error_response(error.status, keep_alive=False))
        self.state.request_finished(self.site.listener, None, error.status, 0.0, None, None, None, self.peer_ip, 0,
                                    self.tls_version)
        self._finish_connection(lingering=True)

    # endings

    def _finish_connection(self, clean: bool = True, lingering: bool = False) -> None:
        """Close after our last answer. If the client may still be sending (`lingering`, or a body we did
        not read to its end), shut our side and read and drop for a while, so that its unread bytes do
        not turn our close into a reset that destroys the answer in flight."""
        if self.closed or self.transport is None:
            return
        self._drop_deadline()
        self.events.clear()
        if not (lingering or not clean) or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.lingering = True
        self._pause_reasons.clear()
        self.transport.resume_reading()
        self.transport.write_eof()
        self._set_timer("linger", LINGER_TIMEOUT)

    # timers

    def _set_timer(self, kind: str, timeout: float, now: float | None = None) -> None:
        """`now`: a clock reading the caller already has (one per event is enough: the clock is in ms)."""
        self._timer_kind = kind  # even without a timeout: the phase is what data_received and drain look at
        self._timeout = timeout
        if timeout <= 0:
            return
        if now is None:
            now = self.loop.time()
        self._deadline = deadline = now + timeout
        if self._timer_bucket:
            if self._timer_at <= deadline:
                return  # it fires first and looks again
            self.state.deadlines.remove(self, self._timer_bucket)
        self._arm(min(deadline, now + self.site.timer_tick))

    def _arm(self, when: float) -> None:
        self._timer_at = when
        self._timer_bucket = self.state.deadlines.add(self, when)

    def _drop_deadline(self) -> None:
        """Nothing to wait for now. The armed timer (if any) stays, finds no deadline when it fires, and lapses:
        cheaper than cancelling it when the next phase would arm one again."""
        self._timer_kind = ""

    def _stop_timer(self) -> None:
        self._timer_kind = ""
        if self._timer_bucket:
            self.state.deadlines.remove(self, self._timer_bucket)
            self._timer_bucket = 0

    def deadline_reached(self) -> None:
        """Called by the deadline wheel (proxy/deadline_wheel.py) at or after `_timer_at`."""
        self._timer_bucket = 0
        kind = self._timer_kind
        timeout = self._timeout
        if self.closed or self.transport is None or not kind or timeout <= 0:
            return
        now = self.loop.time()
        if kind in ("body", "tunnel"):
            # From the last read, so reads never touch the timer; a pause of ours is not idleness.
            if kind == "body" and self._pause_reasons:
                self._last_read = now
            deadline = self._last_read + timeout
        else:
            deadline = self._deadline
        if now + 0.001 < deadline:  # the loop's clock is in ms: a timer may run a little early
            self._arm(min(deadline, now + self.site.timer_tick))
            return
        self._timer_kind = ""
        if kind == "keepalive":
            self.state.timeout_fired("keepalive")
            self.transport.close()
        elif kind == "drain":
            self.transport.close()
        elif kind == "header":
            self.state.timeout_fired("client_header")
            self._reject(HttpError(408, "client header timeout"))
        elif kind == "body":
            self.state.timeout_fired("client_body")
            if self.exchange is not None:
                self.exchange.request_error(HttpError(408, "client body timeout"))
        elif kind == "tunnel":
            self.state.timeout_fired("tunnel_idle")
            if self.tunnel is not None:
                self.tunnel.close()
            self.transport.close()
        else:  # linger
            self.transport.close()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None


def watch_write_stall(state: WorkerState, timeout: float, transport: asyncio.Transport | None, peer: str,
                      protocol: str) -> asyncio.TimerHandle | None:
    """A client that takes none of our writes (pause_writing, HTTP/1.1 or HTTP/2) has `timeout` to take some
    (no send_timeout key yet: client_body_timeout), then its connection is aborted. The handle is the
    connection's to cancel when writing resumes or the connection is lost."""
    if timeout <= 0 or transport is None:
        return None
    return state.loop.call_later(timeout, _write_stalled, state, timeout, transport, peer, protocol)


def _write_stalled(state: WorkerState, timeout: float, transport: asyncio.Transport, peer: str, protocol: str) -> None:
    log.info("%s: %s took none of our writes for %ss, closing", protocol, peer, timeout)
    state.timeout_fired("client_send")
    transport.abort()
