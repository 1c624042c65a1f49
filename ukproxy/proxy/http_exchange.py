"""One request through the proxy: pick a server, connect (or reuse), send, retry, relay the response.

The common case (a server the balancer gives at once, an idle keep-alive connection to it, no request
body) is driven by callbacks alone: `begin` sends the request and the upstream connection's events carry
it to its end, with no Task or Future per request. Anything else (a connect, a VM pool that must grow or
queue, a body, a retry) runs the connect-and-retry coroutine; a failed fast attempt continues there.

Retries follow nginx's proxy_next_upstream: on a connect error or timeout always; after the request went
out only when it is idempotent and its body is still held (`REPLAY_LIMIT`); on a configured 502/503/504
likewise; never once the client has seen a byte of the response; at most `tries` servers within
`next_upstream_timeout`. A reused keep-alive connection that fails before any response byte is retried
once on a fresh connection to the same server (the server closed it as we reused it), idempotent
requests only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from ukproxy.protocol import Event
from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_request import IDEMPOTENT, HttpError, RequestHead
from ukproxy.proxy.http_upstream import (
    READ_TIMEOUT,
    RESET,
    SEND_TIMEOUT,
    UpstreamConnection,
    UpstreamResponse,
)
from ukproxy.upstream.connect import connect
from ukproxy.upstream.keepalive import KeepalivePool
from ukproxy.upstream.server import Server

if TYPE_CHECKING:
    from ukproxy.proxy.http import HttpClientConnection
    from ukproxy.upstream.group import UpstreamGroup
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.http")

REPLAY_LIMIT: Final = 256 * 1024  # request body kept for a retry; past it the request cannot be replayed
PENDING_HIGH: Final = 64 * 1024  # request body waiting for an upstream connection before the client is paused


class _Outcome:
    """Why an attempt on one server did not produce a response head."""

    __slots__ = ("detail", "retryable", "status", "why")

    def __init__(self, status: int, why: str, detail: str, retryable: bool):
        self.status = status
        self.why = why
        self.detail = detail
        self.retryable = retryable


class Exchange:
    # One Exchange per request: what most requests never change is a class default, set on the
    # instance only when it does (as plain Python each assignment in __init__ costs every request;
    # compiled, mypyc sets the defaults natively).
    attempting = False  # a request is out and no response head (or failure) has come back
    attempt: asyncio.Future[_Outcome | None] | None = None  # what the coroutine awaits, if it runs
    attempt_started = 0.0
    upstream: UpstreamConnection | None = None
    server: Server | None = None
    upstream_time: float | None = None
    upstream_addr: str | None = None
    pending_size = 0  # framed body (or upgrade tail) not yet sent, in bytes
    replay_size = 0
    response_started = False
    rechunk = False
    keep_alive = False
    status = 0
    bytes_sent = 0
    finished = False
    tunnel = False
    tunnel_eofs = 0
    task: asyncio.Task[None] | None = None
    key: bytes | None = None  # for the balancer (hash, ip_hash)
    ended_at = 0.0  # when the response's last byte came (0: it did not)

    def __init__(self, client: HttpClientConnection, head: RequestHead, path: bytes,
                 group: UpstreamGroup, pool: KeepalivePool[UpstreamConnection]):
        self.client = client
        self.loop = client.loop
        self.head = head
        self.group = group
        self.upstream_name = group.name
        self.pool = pool
        self.started_at = now = client._last_read  # when its (last) bytes were read: now, as a rule
        timeout = group.config.next_upstream_timeout
        self.deadline: float | None = now + timeout if timeout > 0 else None
        self.request_bytes = msg.upstream_request_head(head, path, head.host_header or group.name.encode(),
                                                       client.peer_ip)
        # the request body
        self.body_done = not head.has_body
        self.pending: list[bytes] = []  # framed body (or upgrade tail) not yet sent
        self.replay: list[bytes] | None = [] if head.method in IDEMPOTENT else None  # framed body already sent
        self.tail: list[bytes] = []  # bytes after an upgrade request, held until the 101
        self.tried: list[Server] = []

    @property
    def state(self) -> WorkerState:
        return self.client.state

    def begin(self) -> None:
        """Send the request now if a server and an idle connection to it are at hand, else start the coroutine."""
        head = self.head
        try:
            key = None
            if self.group.keyed:
                key = self.key = self.client.site.balance_key(self.group, head, self.client.peer_ip)
            if not head.has_body:  # a body is sent with the head by the coroutine's first send
                server = self.group.acquire_nowait(key, self.tried, self.started_at)
                if server is not None:
                    self.tried.append(server)
                    self.server = server
                    self.upstream_addr = server.name
                    conn = self.pool.take(server)
                    if conn is not None:
                        self._send_request(conn, self.started_at)
                        return
                    self.task = self.loop.create_task(self._run(key, server))
                    return
        except Exception:
            log.exception("http: internal error proxying %s", self._describe())
            self._fail(500, "internal_error", "internal error")
            return
        self.task = self.loop.create_task(self._run(key))

    # the connect-and-retry phase

    async def _run(self, key: bytes | None, server: Server | None = None, failed: _Outcome | None = None,
                   stale: bool = False) -> None:
        try:
            await self._proxy(key, server, failed, stale)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("http: internal error proxying %s", self._describe())
            self._fail(500, "internal_error", "internal error")

    async def _proxy(self, key: bytes | None, server: Server | None, failed: _Outcome | None, stale: bool) -> None:
        """`server`: already acquired by `begin`; `failed` (and `stale`): how its fast attempt ended."""
        last: _Outcome | None = None
        while True:
            if server is None:
                server = await self.group.acquire(key, self.tried, self.loop.time())  # a VM pool may grow or queue
                if server is None:
                    if last is None:
                        self.state.no_upstream(self.group.name)
                        self._fail(503, "no_server", f"upstream {self.group.name}: no server available")
                    else:
                        self._fail(last.status, last.why, last.detail)
                    return
                self.tried.append(server)
                self.server = server
                self.upstream_addr = server.name
            outcome = await self._attempt(server, failed, stale)
            failed = None
            if outcome is None or self.finished:
                return  # the response is on its way (or the client left)
            last = outcome
            self._let_go_of_server()
            server.record_failure(self.loop.time())
            self.state.upstream_failed(self.group.name, outcome.why)
            log.warning("upstream %s server %s: %s (%s) for %s", self.group.name, server.name, outcome.why,
                        outcome.detail, self._describe())
            if not (outcome.retryable and self._may_try_again()):
                self._fail(outcome.status, outcome.why, outcome.detail)
                return
            self.state.upstream_retried(self.group.name)
            server = None

    def _may_try_again(self) -> bool:
        return (
            len(self.tried) < self.group.config.tries
            and (self.deadline is None or self.loop.time() < self.deadline)
            and not self.client.closed
        )

    def _replayable(self) -> bool:
        """May the request go out again? Only an idempotent one whose body we still hold, before any response."""
        return self.replay is not None and not self.response_started

    async def _attempt(self, server: Server, failed: _Outcome | None = None, stale: bool = False) -> _Outcome | None:
        conn: UpstreamConnection | None
        if failed is not None:  # the fast attempt on a pooled connection failed
            self.upstream = None
            if not (stale and self._replayable()) or server.gone:
                return failed
            self._stale_retry(server)
            conn, reused = None, False
        else:
            conn = self.pool.take(server)
            reused = conn is not None
        while True:
            if conn is None:
                conn, failure = await self._connect(server)
                if failure is not None:
                    return failure
                assert conn is not None
                if self.finished or self.client.closed:
                    conn.close()
                    return None
            self.attempt = self.loop.create_future()
            self._send_request(conn, self.loop.time())
            outcome = await self.attempt
            self.attempt = None
            if outcome is None:
                return None
            self.upstream = None
            if reused and outcome.why == RESET and not conn.got_bytes and self._replayable() and not server.gone:
                self._stale_retry(server)
                conn, reused = None, False
                continue
            return outcome

    def _stale_retry(self, server: Server) -> None:
        self.state.count(Event.HTTP_STALE_KEEPALIVE, self.group.name)
        log.info("upstream %s server %s: reused connection was closed, retrying on a new one",
                 self.group.name, server.name)

    async def _connect(self, server: Server) -> tuple[UpstreamConnection | None, _Outcome | None]:
        config = self.group.config
        if self.state.free_connections <= 0:
            return None, _Outcome(503, "worker_connections", "worker_connections are not enough", False)
        conn = UpstreamConnection(self.state, server, self.pool, config.read_timeout, config.send_timeout)
        try:
            await connect(self.loop, server, lambda: conn, config.connect_timeout)
        except TimeoutError:
            self.state.timeout_fired("upstream_connect")
            return None, _Outcome(504, "connect_timeout", f"no connection within {config.connect_timeout}s", True)
        except OSError as e:
            return None, _Outcome(502, "connect_error", e.strerror or str(e), True)
        return conn, None

    def _send_request(self, conn: UpstreamConnection, now: float) -> None:
        self.attempting = True
        self.attempt_started = now
        self.upstream = conn
        if self.replay or self.pending:
            parts = [self.request_bytes]
            if self.replay:
                parts.extend(self.replay)
            parts.extend(self.pending)
            pending, self.pending = self.pending, []
            self._keep_for_replay(pending)
            if self.pending_size:
                self.pending_size = 0
                self.client.resume_reading("pending")
            data = b"".join(parts)
        else:
            data = self.request_bytes
        conn.start(self, data, self.head.method == b"HEAD", now)
        if self.client.writing_paused:
            conn.pause_reading()

    def _keep_for_replay(self, framed: list[bytes]) -> None:
        """Body bytes went upstream: keep them for a replay while that is possible."""
        if self.replay is not None and framed:
            size = sum(map(len, framed))
            if self.replay_size + size > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay.extend(framed)
                self.replay_size += size

    # the request body, from the client connection

    def request_body(self, data: bytes) -> None:
        self._forward_body(msg.chunk(data) if self.head.chunked else data)

    def request_end(self) -> None:
        self.body_done = True
        if self.head.chunked:
            self._forward_body(msg.LAST_CHUNK)

    def request_tail(self, data: bytes) -> None:
        """Bytes after an upgrade request: the first of the tunnel, held until the upstream agrees."""
        if self.tunnel and self.upstream is not None:
            self.upstream.send(data)
        else:
            self.tail.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_HIGH:
                self.client.pause_reading("pending")

    def _forward_body(self, framed: bytes) -> None:
        if self.finished:
            return
        conn = self.upstream
        if conn is not None and (self.attempting or self.response_started):
            conn.send(framed)
            self._keep_for_replay([framed])
        else:
            self.pending.append(framed)
            self.pending_size += len(framed)
            if self.pending_size > PENDING_HIGH:
                self.client.pause_reading("pending")

    def request_error(self, error: HttpError) -> None:
        """The client's body went wrong (too large, malformed, too slow)."""
        if self.finished:
            return
        self.body_done = False
        self._abort_upstream()
        if self.response_started:
            log.warning("http: %s while streaming the request body of %s", error.reason, self._describe())
            self.state.count(Event.HTTP_ERROR, error.reason)
            self._done(keep_alive=False, abort=True)
        else:
            self._fail(error.status, error.reason, error.reason, keep_alive=False)

    # the client connection's own events

    def client_gone(self) -> None:
        if self.finished:
            return
        if not self.response_started:
            self.status = 499  # nginx's "client closed request"
        self._abort_upstream()
        self._done(keep_alive=False)

    def client_write_paused(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def tunnel_from_client(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.send(data)

    def tunnel_client_eof(self) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None and not conn.closed and conn.transport.can_write_eof():
            conn.transport.write_eof()
        self._tunnel_eof()

    # the upstream connection's events (ResponseSink)

    def upstream_data(self, response: UpstreamResponse | None, body: list[bytes], complete: bool, now: float) -> None:
        """What one read from the upstream brought (at `now`): maybe the response head, body pieces,
        maybe the end. Passed to the client in one write."""
        if self.finished:
            return
        out: bytes | None = None
        if response is not None:
            out = self._response_head(response, now)
            if out is None:
                return  # refused: the attempt failed (and may be retried)
            if response.status == 101:
                self.client.write(out)
                self._start_tunnel()
                self._resolve(None)
                return
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
            self._resolve(None)
        if complete:
            self.ended_at = now
            conn, self.upstream = self.upstream, None
            if conn is not None:
                if not self.body_done or self.pending:
                    conn.reusable = False  # the upstream did not take the whole request: its state is unknown
                conn.release()
            self._done(keep_alive=self.keep_alive and self.body_done)

    def _response_head(self, response: UpstreamResponse, now: float) -> bytes | None:
        """The response head as the client gets it, or None when this response is refused instead:
        a status to retry on, or a 101 nobody asked for."""
        status = response.status
        if status in self.group.config.next_upstream_statuses and self._replayable() and self._may_try_again():
            self._resolve(_Outcome(status, f"status_{status}", "answered", True))
            if self.upstream is not None:
                self.upstream.abort()
            return None
        if status == 101 and self.head.upgrade is None:
            self._resolve(_Outcome(502, "invalid_response", "101 to a request that did not ask to upgrade", False))
            if self.upstream is not None:
                self.upstream.abort()
            return None
        self.upstream_time = upstream_time = now - self.attempt_started
        if self.server is not None:
            self.server.record_success(upstream_time)
        self.status = status
        head = self.head
        content_length = response.content_length
        close_delimited = False
        if response.bodyless:
            self.rechunk = False
        elif response.chunked or response.until_close:
            content_length = None
            self.rechunk = head.version == b"1.1"
            close_delimited = not self.rechunk
        self.keep_alive = (
            head.keep_alive and not close_delimited and self.body_done and status != 101 and head.upgrade is None
            and self.client.may_keep_alive()
        )
        self.response_started = True
        self.replay = None
        return msg.client_response_head(head.version, status, response.reason, response.lines, content_length,
                                        self.rechunk, self.keep_alive, response.upgrade if status == 101 else None)

    def upstream_failed(self, why: str, detail: str) -> None:
        if self.finished:
            return
        if self.attempting:
            status = 504 if why in (READ_TIMEOUT, SEND_TIMEOUT) else 502
            if why in (READ_TIMEOUT, SEND_TIMEOUT):
                self.state.timeout_fired(f"upstream_{why}")
            self._resolve(_Outcome(status, why, detail, self._replayable()))
            return
        # The response was under way: the client gets a truncated one and a closed connection.
        self.upstream = None
        log.warning("upstream %s server %s: %s (%s) while relaying the response to %s", self.group.name,
                    self.upstream_addr, why, detail, self._describe())
        self.state.upstream_failed(self.group.name, why)
        if self.server is not None:
            self.server.record_failure(self.loop.time())
        self._done(keep_alive=False, abort=True)

    def upstream_tunnel_data(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.client.write(data)

    def upstream_tunnel_eof(self) -> None:
        self.client.write_eof()
        self._tunnel_eof()

    def upstream_tunnel_lost(self) -> None:
        self.upstream = None
        self.tunnel_closed()

    def upstream_write_paused(self) -> None:
        self.client.pause_reading("upstream")

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading("upstream")

    # the tunnel after a 101

    def _start_tunnel(self) -> None:
        self.tunnel = True
        conn = self.upstream
        assert conn is not None
        conn.reusable = False
        for data in self.tail:
            conn.send(data)
        self.tail = []
        if self.pending_size:
            self.pending_size = 0
            self.client.resume_reading("pending")
        self.client.start_tunnel(self, self.group.config.idle_timeout)

    def _tunnel_eof(self) -> None:
        self.tunnel_eofs += 1
        if self.tunnel_eofs >= 2:
            self.tunnel_closed()

    def tunnel_closed(self) -> None:
        """Either side of the tunnel is gone, or both said EOF: close the other and account."""
        if self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._done(keep_alive=False)

    # endings

    def _resolve(self, outcome: _Outcome | None) -> None:
        """The attempt in flight is over: None when the response is on its way, else why it failed."""
        if not self.attempting:
            return
        self.attempting = False
        if self.attempt is not None:
            if not self.attempt.done():
                self.attempt.set_result(outcome)
        elif outcome is not None:
            # A fast attempt failed: what follows (a fresh connection, another server) is the coroutine's.
            conn = self.upstream
            stale = outcome.why == RESET and conn is not None and not conn.got_bytes  # it came from the pool
            self.task = self.loop.create_task(self._run(self.key, self.server, outcome, stale))

    def _abort_upstream(self) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.abort()
        if self.attempting:
            self._resolve(None)
        if self.task is not None and not self.task.done() and self.attempt is None:
            self.task.cancel()  # still connecting (or a retry not begun)

    def _fail(self, status: int, why: str, detail: str, keep_alive: bool | None = None) -> None:
        """Answer with the proxy's own error, if the client has not seen a byte of a response yet."""
        if self.finished:
            return
        self.state.count(Event.HTTP_ERROR, why)
        if self.response_started:
            self._done(keep_alive=False, abort=True)
            return
        log.warning("http: %d (%s: %s) for %s", status, why, detail, self._describe())
        if keep_alive is None:
            keep_alive = self.head.keep_alive and self.body_done and self.client.may_keep_alive()
        self.status = status
        self.client.write(msg.error_response(status, keep_alive, head_only=self.head.method == b"HEAD"))
        self.response_started = True
        self._done(keep_alive)

    def _let_go_of_server(self) -> None:
        if self.server is not None:
            self.group.release(self.server)
            self.server = None

    def _done(self, keep_alive: bool, abort: bool = False) -> None:
        self.finished = True
        self._let_go_of_server()
        task = self.task
        if task is not None and not task.done() and asyncio.current_task() is not task:
            task.cancel()
        if self.upstream is not None and not self.tunnel:
            self.upstream.abort()
            self.upstream = None
        self.client.exchange_finished(self, keep_alive, abort)

    def _describe(self) -> str:
        return f"{self.head.method.decode()} {self.head.target.decode('latin-1')} from {self.client.peer}"
