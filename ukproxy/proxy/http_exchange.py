"""One request through the proxy: pick a server, connect (or reuse), send, retry, relay the response.

The common case (a server the balancer gives at once, an idle keep-alive connection to it, no request
body) is driven by callbacks alone: `begin` sends the request and the upstream connection's events carry
it to its end, with no Task or Future per request. Anything else (a connect, a VM pool that must grow or
queue, a body, a retry) runs the connect-and-retry coroutine; a failed fast attempt continues there.

Whether a failed attempt is followed by another is decided in one place, `_next_attempt` (nginx's
ngx_http_upstream_next), called after every failure: a connect error or timeout is always retried; after
the request went out, only when it is idempotent and its body is still held (`http_body.REPLAY_LIMIT`);
on a configured 502/503/504 likewise; never once the client has seen a byte of the response; at most
`tries` servers within `next_upstream_timeout`. A reused keep-alive connection that fails before any
response byte is retried once on a fresh connection to the same server (the server closed it as we
reused it), idempotent requests only, without using up a try. The request body lives in
`http_body.RequestBody`; after a 101 the bytes go both ways through an `http_tunnel.Tunnel`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Final

from ukproxy.edge.compress import Encoder, start_encoding
from ukproxy.edge.compress_config import CompressPolicy
from ukproxy.protocol import Event
from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_body import RequestBody
from ukproxy.proxy.http_request import HttpError, RequestHead
from ukproxy.proxy.http_tunnel import Tunnel
from ukproxy.proxy.http_upstream import (
    INVALID,
    READ_TIMEOUT,
    RESET,
    SEND_TIMEOUT,
    UpstreamConnection,
    UpstreamResponse,
)
from ukproxy.upstream.connect import connect
from ukproxy.upstream.group import FROM_PEER, LOCAL, MAY_SPILL
from ukproxy.upstream.keepalive import KeepalivePool
from ukproxy.upstream.peers import SPILLED_FROM
from ukproxy.upstream.server import Server

if TYPE_CHECKING:
    from ukproxy.config import UpstreamConfig
    from ukproxy.edge.http_edge import EdgePlan
    from ukproxy.upstream.group import UpstreamGroup
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.http")


class Phase(enum.IntEnum):
    """Where an exchange is (Exchange.phase), in the order the phases come. Compiled, testing an IntEnum
    member costs about a nanosecond more than a Final int (measured): nothing on the request path."""

    STARTING = 0  # choosing a server, connecting, or between two attempts: no request is out
    AWAITING = 1  # a request is out; no response head (nor failure) has come back
    RELAYING = 2  # the client has the response head (or the proxy's error); the body follows
    TUNNEL = 3  # after a 101: the Tunnel carries the bytes, the exchange waits to account for it
    FINISHED = 4


class FailureKind(enum.IntFlag):
    """Why an attempt failed, as bit flags (nginx's NGX_HTTP_UPSTREAM_FT_*): the retry rules test sets of them."""

    CONNECT_ERROR = 0x01
    CONNECT_TIMEOUT = 0x02
    RESET = 0x04  # the connection closed or reset before the response head
    INVALID = 0x08  # the response head could not be parsed
    READ_TIMEOUT = 0x10
    SEND_TIMEOUT = 0x20
    STATUS = 0x40  # the server answered with one of next_upstream_statuses
    NO_CONNECTIONS = 0x80  # worker_connections are used up
    UNEXPECTED_UPGRADE = 0x100  # a 101 to a request that did not ask to upgrade


NOT_SENT: Final = FailureKind.CONNECT_ERROR | FailureKind.CONNECT_TIMEOUT  # the request never went out
HOPELESS: Final = FailureKind.NO_CONNECTIONS | FailureKind.UNEXPECTED_UPGRADE  # another attempt cannot help

_FAILURE_KINDS: Final = {RESET: FailureKind.RESET, INVALID: FailureKind.INVALID,
                         READ_TIMEOUT: FailureKind.READ_TIMEOUT, SEND_TIMEOUT: FailureKind.SEND_TIMEOUT}


class Next(enum.Enum):
    """What follows a failed attempt (`Exchange._next_attempt`)."""

    GIVE_UP = 0  # the client gets the failure
    SAME_SERVER = 1  # again, on a fresh connection to the same server
    NEXT_SERVER = 2


class ClientSide(asyncio.Protocol):
    """What an exchange asks of the client connection it serves; http.HttpClientConnection is the one kind.
    A base class rather than a Protocol: compiled, calls through it stay native (through a Protocol each is
    a Python-level call), and this module needs nothing from http."""

    closed: bool
    writing_paused: bool
    peer: str  # for logs
    scheme: bytes = b"http"  # what upstreams hear in X-Forwarded-Proto: b"https" over TLS
    added_headers: bytes = b""  # header lines every proxied response gets (HSTS over TLS)

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_eof(self) -> None:
        raise NotImplementedError

    def pause_reading(self, reason: str) -> None:
        raise NotImplementedError

    def resume_reading(self, reason: str) -> None:
        raise NotImplementedError

    def may_keep_alive(self) -> bool:
        raise NotImplementedError

    def start_tunnel(self, tunnel: Tunnel, idle_timeout: float) -> None:
        raise NotImplementedError

    def exchange_finished(self, exchange: Exchange, keep_alive: bool, abort: bool = False) -> None:
        raise NotImplementedError


def balance_key(config: UpstreamConfig, head: RequestHead, client_ip: bytes) -> bytes | None:
    """What the hash and ip_hash balancers pick a server by, for this request."""
    if config.balance == "ip_hash":
        return client_ip
    if config.balance != "hash":
        return None
    key = config.hash_key
    if key == "remote_addr":
        return client_ip
    if key == "uri":
        return head.target
    if key.startswith("header:"):
        return head.header(key[7:].strip().lower().encode())
    return None


class _Failure:
    """Why an attempt on one server did not produce a response head."""

    __slots__ = ("detail", "kind", "stale", "status", "why")

    def __init__(self, status: int, why: str, detail: str, kind: FailureKind, stale: bool = False):
        self.status = status  # what the client gets if nothing follows
        self.why = why  # for the counters and logs
        self.detail = detail
        self.kind = kind
        self.stale = stale  # on a reused keep-alive connection, before any byte of the response


class Exchange:
    # One Exchange per request: what most requests never change is a class default, set on the
    # instance only when it does (as plain Python each assignment in __init__ costs every request;
    # compiled, mypyc sets the defaults natively).
    phase = Phase.STARTING
    attempt: asyncio.Future[_Failure | None] | None = None  # what the coroutine awaits, if it runs
    attempt_started = 0.0
    upstream: UpstreamConnection | None = None
    server: Server | None = None
    upstream_time: float | None = None
    upstream_addr: str | None = None
    rechunk = False
    keep_alive = False
    status = 0
    bytes_sent = 0
    task: asyncio.Task[None] | None = None
    key: bytes | None = None  # for the balancer (hash, ip_hash)
    ended_at = 0.0  # when the response's last byte came (0: it did not)
    edge: EdgePlan | None = None  # the request's edge rules, when its listener has any (edge/http_edge.py)
    compress: CompressPolicy | None = None  # set by the client connection when its listener or route compresses
    encoder: Encoder | None = None  # this response's body is compressed (edge/compress.py)
    spilled = False  # this attempt goes to a peer node (docs/cluster.md): its request head says so
    home_request_bytes = b""  # the request head as this node's own servers get it, while spilled

    def __init__(self, client: ClientSide, state: WorkerState, head: RequestHead, path: bytes, group: UpstreamGroup,
                 started_at: float, client_ip: bytes, edge: EdgePlan | None = None):
        self.client = client
        self.state = state
        self.loop = state.loop
        self.head = head
        self.group = group
        self.upstream_name = group.name
        self.keepalive_pool: KeepalivePool[UpstreamConnection] = group.keepalive_pool
        self.started_at = started_at  # when its (last) bytes were read
        self.client_ip = client_ip
        timeout = group.config.next_upstream_timeout
        self.deadline: float | None = started_at + timeout if timeout > 0 else None
        host = head.host_header or group.name.encode()
        if edge is None:
            self.request_bytes = msg.upstream_request_head(head, path, host, client_ip, client.scheme)
        else:  # header rules, request id, forwarding headers (edge/http_edge.py)
            self.edge = edge
            self.request_bytes = edge.upstream_head(path, host)
        self.body = RequestBody(head)
        self.tried: list[Server] = []

    @property
    def finished(self) -> bool:
        return self.phase == Phase.FINISHED

    @property
    def body_done(self) -> bool:
        return self.body.done

    def begin(self) -> None:
        """Send the request now if a server and an idle connection to it are at hand, else start the coroutine."""
        head = self.head
        try:
            if self.group.keyed:
                self.key = balance_key(self.group.config, head, self.client_ip)
            if not head.has_body:  # a body is sent with the head by the coroutine's first send
                server = self.group.acquire_nowait(self.key, self.tried, self.started_at)
                if server is not None:
                    self._use(server)
                    conn = self.keepalive_pool.take(server)
                    if conn is not None:
                        self._send_request(conn, self.started_at)
                        return
                    self.task = self.loop.create_task(self._run(server, None))
                    return
        except Exception:
            log.exception("http: internal error proxying %s", self._describe())
            self._fail(500, "internal_error", "internal error")
            return
        self.task = self.loop.create_task(self._run(None, None))

    # the connect-and-retry coroutine

    async def _run(self, server: Server | None, failed: _Failure | None) -> None:
        try:
            await self._proxy(server, failed)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("http: internal error proxying %s", self._describe())
            self._fail(500, "internal_error", "internal error")

    async def _proxy(self, server: Server | None, failed: _Failure | None) -> None:
        """`server`: already acquired by `begin`; `failed`: how its fast attempt ended."""
        last: _Failure | None = None
        while True:
            if failed is None:
                if server is None:
                    # a VM pool may wait; in a cluster a full one may spill to a peer
                    server = await self.group.acquire(self.key, self.tried, self.loop.time(), self._reach())
                    if server is None:
                        self._no_server(last)
                        return
                    self._use(server)
                    self._spill_if_peer(server)
                failed = await self._attempt(server, fresh=False)
            if failed is None or self.phase == Phase.FINISHED:
                return  # the response is on its way (or the client left)
            assert server is not None  # a failure is always some server's
            after = self._next_attempt(failed)
            if after == Next.SAME_SERVER:
                self.state.count(Event.HTTP_STALE_KEEPALIVE, self.group.name)
                log.info("upstream %s server %s: reused connection was closed, retrying on a new one",
                         self.group.name, server.name)
                failed = await self._attempt(server, fresh=True)
                if failed is None or self.phase == Phase.FINISHED:
                    return
                after = self._next_attempt(failed)  # not SAME_SERVER again: a fresh connection is not stale
            self._server_failed(server, failed)
            if after == Next.GIVE_UP:
                self._fail(failed.status, failed.why, failed.detail)
                return
            self.state.upstream_retried(self.group.name)
            last, server, failed = failed, None, None

    def _next_attempt(self, failure: _Failure) -> Next:
        """What follows `failure`: the whole retry decision, in one place as nginx's ngx_http_upstream_next
        keeps it (failure kind, what was sent, tries, time)."""
        kind = failure.kind
        if kind & HOPELESS or self.phase >= Phase.RELAYING or self.client.closed:
            return Next.GIVE_UP  # nothing to gain, or the client saw a byte of a response, or left
        if not kind & NOT_SENT and not self.body.replayable:
            return Next.GIVE_UP  # the request went out: only an idempotent one whose body we still hold goes again
        if kind == FailureKind.STATUS and failure.status not in self.group.config.next_upstream_statuses \
                and not self.spilled:  # a peer's 503 says it is full too: try elsewhere (queue at home)
            return Next.GIVE_UP
        if self.deadline is not None and self.loop.time() >= self.deadline:
            return Next.GIVE_UP  # next_upstream_timeout
        if failure.stale and self.server is not None and not self.server.gone:
            return Next.SAME_SERVER  # the server closed the idle connection as we reused it: no try is used up
        if len(self.tried) >= self.group.config.tries:
            return Next.GIVE_UP
        return Next.NEXT_SERVER

    def _reach(self) -> int:
        """How far past this node's own servers the request may go: only in a cluster, and never again for
        a request a peer spilled here (so nothing is forwarded twice)."""
        if self.group.peers is None:
            return LOCAL
        return FROM_PEER if self.head.header(SPILLED_FROM) is not None else MAY_SPILL

    def _spill_if_peer(self, server: Server) -> None:
        peers = self.group.peers
        spilled = peers is not None and peers.holds(server)
        if spilled == self.spilled:
            return
        self.spilled = spilled
        if peers is not None and spilled:
            self.home_request_bytes = self.request_bytes
            self.request_bytes = peers.mark(self.request_bytes)
            self.state.count(Event.SPILLED, self.group.name)
        else:
            self.request_bytes = self.home_request_bytes

    def _use(self, server: Server) -> None:
        self.tried.append(server)
        self.server = server
        self.upstream_addr = server.name

    def _no_server(self, last: _Failure | None) -> None:
        if last is None:
            self.state.no_upstream(self.group.name)
            self._fail(503, "no_server", f"upstream {self.group.name}: no server available")
        else:
            self._fail(last.status, last.why, last.detail)

    def _server_failed(self, server: Server, failure: _Failure) -> None:
        self._release_server()
        server.record_failure(self.loop.time())
        self.state.upstream_failed(self.group.name, failure.why)
        log.warning("upstream %s server %s: %s (%s) for %s", self.group.name, server.name, failure.why,
                    failure.detail, self._describe())

    async def _attempt(self, server: Server, fresh: bool) -> _Failure | None:
        """One try on `server`, on an idle keep-alive connection unless `fresh`. None when the response is
        on its way (or the exchange is over)."""
        conn = None if fresh else self.keepalive_pool.take(server)
        if conn is None:
            conn, failure = await self._connect(server)
            if failure is not None:
                return failure
            assert conn is not None
            if self.phase == Phase.FINISHED or self.client.closed:
                conn.close()
                return None
        self.attempt = self.loop.create_future()
        self._send_request(conn, self.loop.time())
        failure = await self.attempt
        self.attempt = None
        return failure

    async def _connect(self, server: Server) -> tuple[UpstreamConnection | None, _Failure | None]:
        config = self.group.config
        if self.state.free_connections <= 0:
            return None, _Failure(503, "worker_connections", "worker_connections are not enough",
                                  FailureKind.NO_CONNECTIONS)
        conn = UpstreamConnection(self.state, server, self.keepalive_pool, config.read_timeout, config.send_timeout)
        peers = self.group.peers
        try:
            await connect(self.loop, server, lambda: conn, config.connect_timeout,
                          peers.connect if self.spilled and peers is not None else self.group.make_socket,
                          self.state.deadlines)
        except TimeoutError:
            self.state.timeout_fired("upstream_connect")
            return None, _Failure(504, "connect_timeout", f"no connection within {config.connect_timeout}s",
                                  FailureKind.CONNECT_TIMEOUT)
        except OSError as e:
            return None, _Failure(502, "connect_error", e.strerror or str(e), FailureKind.CONNECT_ERROR)
        return conn, None

    def _send_request(self, conn: UpstreamConnection, now: float) -> None:
        self.phase = Phase.AWAITING
        self.attempt_started = now
        self.upstream = conn
        body = self.body
        if body.replay or body.pending:
            data = body.with_head(self.request_bytes)
            if body.forget_held():
                self.client.resume_reading("pending")
        else:
            data = self.request_bytes
        conn.start(self, data, self.head.method == b"HEAD", now)
        if self.client.writing_paused:
            conn.pause_reading()

    def _attempt_over(self, failure: _Failure | None) -> None:
        """The attempt that was AWAITING is over: None when its response is on its way (or the exchange
        ends), else why it failed. The coroutine awaiting it carries on; a failed fast attempt starts it."""
        attempt = self.attempt
        if attempt is not None:
            if not attempt.done():
                attempt.set_result(failure)
        elif failure is not None:
            self.task = self.loop.create_task(self._run(self.server, failure))

    def _refuse(self, failure: _Failure) -> None:
        """The response head that came is not for the client: the attempt failed."""
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        self.phase = Phase.STARTING
        self._attempt_over(failure)

    # the request body, from the client connection

    def request_body(self, data: bytes) -> None:
        self._forward_body(self.body.frame(data))

    def request_end(self) -> None:
        last = self.body.end()
        if last is not None:
            self._forward_body(last)

    def request_tail(self, data: bytes) -> None:
        """Bytes after an upgrade request: the first of the tunnel, held until the upstream agrees."""
        if self.body.hold_tail(data):
            self.client.pause_reading("pending")

    def _forward_body(self, framed: bytes) -> None:
        phase = self.phase
        if phase == Phase.FINISHED:
            return
        conn = self.upstream
        if conn is not None and phase in (Phase.AWAITING, Phase.RELAYING):
            conn.send(framed)
            self.body.sent([framed])
        elif self.body.hold(framed):
            self.client.pause_reading("pending")

    def request_error(self, error: HttpError) -> None:
        """The client's body went wrong (too large, malformed, too slow)."""
        if self.phase == Phase.FINISHED:
            return
        self.body.done = False
        self._abort_upstream()
        if self.phase == Phase.RELAYING:
            log.warning("http: %s while streaming the request body of %s", error.reason, self._describe())
            self.state.count(Event.HTTP_ERROR, error.reason)
            self._done(keep_alive=False, abort=True)
        else:
            self._fail(error.status, error.reason, error.reason, keep_alive=False)

    # the client connection's own events

    def client_gone(self) -> None:
        if self.phase == Phase.FINISHED:
            return
        if self.phase < Phase.RELAYING:
            self.status = 499  # nginx's "client closed request"
        self._abort_upstream()
        self._done(keep_alive=False)

    def client_write_paused(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # the upstream connection's events (http_upstream.ResponseSink)

    def upstream_data(self, response: UpstreamResponse | None, body: list[bytes], complete: bool, now: float) -> None:
        """What one read from the upstream brought (at `now`): maybe the response head, body pieces,
        maybe the end. Passed to the client in one write."""
        if self.phase == Phase.FINISHED:
            return
        out: bytes | None = None
        if response is not None:
            out = self._response_head(response, now)
            if out is None:
                return  # refused: the attempt failed (and may be retried)
            if response.status == 101:
                self.client.write(out)
                self._start_tunnel()
                self._attempt_over(None)
                return
        encoder = self.encoder
        if encoder is not None and (body or complete):
            data = encoder.feed(body, complete)
            body = [data] if data else []
        if body:
            size = 0
            for piece in body:
                size += len(piece)
            self.bytes_sent += size
            if self.rechunk:
                body = [msg.chunk(piece) for piece in body]
            if out is not None:
                body.insert(0, out)
            if complete and self.rechunk:
                body.append(msg.LAST_CHUNK)
            out = body[0] if len(body) == 1 else b"".join(body)
        elif complete and self.rechunk:
            out = msg.LAST_CHUNK if out is None else out + msg.LAST_CHUNK
        if out is not None:
            self.client.write(out)
        if response is not None:
            self._attempt_over(None)
        if complete:
            self._response_complete(now, self.keep_alive and self.body.done)

    def _response_complete(self, now: float, keep_alive: bool) -> None:
        """The upstream's answer is all relayed: its connection goes back for reuse and the exchange ends."""
        self.ended_at = now
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.release(self.body.all_sent)
        self._done(keep_alive=keep_alive)

    def _take_response(self, response: UpstreamResponse, now: float) -> bool:
        """Whether this response head goes to the client; False when it is refused instead (a status to
        retry on, a 101 nobody asked for). The seam HTTP/2 streams share (h2_stream.H2Exchange)."""
        status = response.status
        if status in self.group.config.next_upstream_statuses or (status == 503 and self.spilled):
            failure = _Failure(status, f"status_{status}", "answered", FailureKind.STATUS)
            if self._next_attempt(failure) != Next.GIVE_UP:
                self._refuse(failure)
                return False
        if status == 101 and self.head.upgrade is None:
            self._refuse(_Failure(502, "invalid_response", "101 to a request that did not ask to upgrade",
                                  FailureKind.UNEXPECTED_UPGRADE))
            return False
        self.upstream_time = upstream_time = now - self.attempt_started
        if self.server is not None:
            if status == 503 and self.spilled:
                self.server.record_failure(now)  # a full peer, whose 503 the client gets: left out all the same
            else:
                self.server.record_success(upstream_time)
        self.status = status
        if self.edge is not None:  # the route's response header rules, the request id back (edge/http_edge.py)
            response.lines = self.edge.response_lines(response.lines, status)
        return True

    def _response_head(self, response: UpstreamResponse, now: float) -> bytes | None:
        """The response head as the client gets it, or None when this response is refused instead."""
        if not self._take_response(response, now):
            return None
        status = response.status
        head = self.head
        content_length = response.content_length
        close_delimited = False
        lines = response.lines
        if self.compress is not None:
            lines, self.encoder = start_encoding(self.compress, head, response)
        if response.bodyless:
            self.rechunk = False
        elif response.chunked or response.until_close or self.encoder is not None:
            content_length = None
            self.rechunk = head.version == b"1.1"
            close_delimited = not self.rechunk
        self.keep_alive = (
            head.keep_alive and not close_delimited and self.body.done and status != 101 and head.upgrade is None
            and self.client.may_keep_alive()
        )
        self.phase = Phase.RELAYING
        self.body.stop_replay()
        if self.client.added_headers:
            lines = [*lines, self.client.added_headers]
        return msg.client_response_head(head.version, status, response.reason, lines, content_length,
                                        self.rechunk, self.keep_alive, response.upgrade if status == 101 else None)

    def upstream_failed(self, why: str, detail: str) -> None:
        if self.phase == Phase.FINISHED:
            return
        conn, self.upstream = self.upstream, None
        if self.phase == Phase.AWAITING:
            timeout = why in (READ_TIMEOUT, SEND_TIMEOUT)
            if timeout:
                self.state.timeout_fired(f"upstream_{why}")
            stale = why == RESET and conn is not None and conn.reused and not conn.got_bytes
            self.phase = Phase.STARTING
            kind = _FAILURE_KINDS.get(why, FailureKind.RESET)
            self._attempt_over(_Failure(504 if timeout else 502, why, detail, kind, stale))
            return
        # The response was under way: the client gets a truncated one and a closed connection.
        log.warning("upstream %s server %s: %s (%s) while relaying the response to %s", self.group.name,
                    self.upstream_addr, why, detail, self._describe())
        self.state.upstream_failed(self.group.name, why)
        if self.server is not None:
            self.server.record_failure(self.loop.time())
        self._done(keep_alive=False, abort=True)

    def upstream_write_paused(self) -> None:
        self.client.pause_reading("upstream")

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading("upstream")

    # after a 101

    def _start_tunnel(self) -> None:
        conn, self.upstream = self.upstream, None
        assert conn is not None
        self.phase = Phase.TUNNEL
        tunnel = Tunnel(self.client, conn, self._tunnel_closed)
        conn.start_tunnel(tunnel)
        for data in self.body.take_tail():
            conn.send(data)
        if self.body.forget_held():
            self.client.resume_reading("pending")
        self.client.start_tunnel(tunnel, self.group.config.idle_timeout)

    def _tunnel_closed(self, bytes_to_client: int) -> None:
        self.bytes_sent += bytes_to_client
        self._done(keep_alive=False)

    # endings

    def _abort_upstream(self) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        if self.phase == Phase.AWAITING:
            self.phase = Phase.STARTING
            self._attempt_over(None)
        if self.task is not None and not self.task.done() and self.attempt is None:
            self.task.cancel()  # still connecting (or a retry not begun)

    def _fail(self, status: int, why: str, detail: str, keep_alive: bool | None = None) -> None:
        """Answer with the proxy's own error, if the client has not seen a byte of a response yet."""
        if self.phase == Phase.FINISHED:
            return
        self.state.count(Event.HTTP_ERROR, why)
        if self.phase >= Phase.RELAYING:
            self._done(keep_alive=False, abort=True)
            return
        log.warning("http: %d (%s: %s) for %s", status, why, detail, self._describe())
        if keep_alive is None:
            keep_alive = self.head.keep_alive and self.body.done and self.client.may_keep_alive()
        self.status = status
        self._answer_error(status, keep_alive)
        self.phase = Phase.RELAYING
        self._done(keep_alive)

    def _answer_error(self, status: int, keep_alive: bool) -> None:
        """The proxy's own error answer on the client's wire (an HTTP/2 stream frames it its own way)."""
        reply = msg.error_response(status, keep_alive, head_only=self.head.method == b"HEAD")
        if self.edge is not None:  # the request id and `always` response rules on our own errors too (edge/)
            lines = self.edge.answer_lines(status)
            if lines:
                reply = reply.replace(b"\r\n", b"\r\n" + lines, 1)
        self.client.write(reply)

    def _release_server(self) -> None:
        if self.server is not None:
            self.group.release(self.server)
            self.server = None

    def _done(self, keep_alive: bool, abort: bool = False) -> None:
        self.phase = Phase.FINISHED
        self._release_server()
        task = self.task
        if task is not None and not task.done() and asyncio.current_task(self.loop) is not task:
            task.cancel()
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        self.client.exchange_finished(self, keep_alive, abort)

    def _describe(self) -> str:
        return f"{self.head.method.decode()} {self.head.target.decode('latin-1')} from {self.client.peer}"
