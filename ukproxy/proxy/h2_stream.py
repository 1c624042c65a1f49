"""One HTTP/2 stream as the exchange machinery sees it: a client side of its own (docs/architecture.md, "HTTP/2").

An HTTP/2 request is routed, balanced, pooled, retried and accounted exactly as an HTTP/1.1 one: its
stream builds the same `RequestHead` from the decoded header list and runs the same
`http_exchange.Exchange`, subclassed only where bytes meet the client's wire (`H2Exchange`: a response
head is a header list, the body goes out as DATA frames, the proxy's own errors are small responses).
Upstreams stay HTTP/1.1. The stream knows nothing of frames: it asks its connection
(`h2_connection.H2ClientConnection`, through `StreamOwner`) to send, to give window back, and to forget it.

Flow control, both ways: request body bytes are given back as window only once the exchange took them
without pausing the client (`pause_reading`), so a slow upstream holds the client to one window per
stream; response bytes the client's window cannot take yet wait in the stream, and above `OUT_HIGH`
the upstream connection stops being read (`writing_paused`).
"""

from __future__ import annotations

import re
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol

from ukproxy.edge.compress import start_encoding
from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_exchange import ClientSide, Exchange, Phase
from ukproxy.proxy.http_request import SPECIAL, HttpError, RequestHead, known_host, valid_host
from ukproxy.proxy.http_tunnel import Tunnel
from ukproxy.proxy.http_upstream import UpstreamResponse

if TYPE_CHECKING:
    from ukproxy.config import HttpConfig
    from ukproxy.edge.compress_config import CompressPolicy
    from ukproxy.edge.guard import Admission
    from ukproxy.edge.http_edge import EdgePlan
    from ukproxy.upstream.group import UpstreamGroup
    from ukproxy.worker_state import WorkerState

OUT_HIGH: Final = 64 * 1024  # response bytes waiting for the client's window before the upstream is paused
VERSION: Final = b"2.0"  # RequestHead.version of an HTTP/2 request (the access log's "HTTP/2.0", as nginx's)
# Connection-specific header fields (RFC 9113 8.2.2): malformed in a request, dropped from our own answers.
_CONNECTION_FIELDS: Final = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a field name in lower case (RFC 9110 5.1)
_BAD_VALUE: Final = re.compile(rb"[\r\n\0]")


class StreamOwner(Protocol):
    """What a stream asks of its connection (h2_connection.H2ClientConnection)."""

    def send_head(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...
    def send_body(self, stream: H2Stream, data: bytes, end: bool) -> None: ...
    def give_window(self, stream: H2Stream, size: int) -> None: ...
    def stream_over(self, stream: H2Stream, abort: bool) -> None: ...


def request_head(headers: list[tuple[bytes, bytes]], ended: bool, limits: HttpConfig) -> RequestHead:
    """The request as the exchange machinery knows it, from a decoded header list. Pseudo-headers give the
    request line; regular fields go upstream as ready-made HTTP/1.1 lines.

    The header list is checked here, not by h2 (whose checks cost a third of its work on a request): what
    RFC 9113 8.2 and 8.3 call malformed is refused with a 400 (names in lower case and tokens, no CR, LF or
    NUL in a value, pseudo-headers known, once and first, the connection-specific fields absent, TE only
    "trailers"); surrounding whitespace is dropped and cookies are joined as 8.2.3 says."""
    method = path = authority = scheme = b""
    lines: list[bytes] = []
    special: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    size = 0
    regular = False
    for name, value in headers:
        size += len(name) + len(value) + 32  # RFC 9113 6.5.2's accounting
        if _BAD_VALUE.search(value) is not None:
            raise HttpError(400, "CR, LF or NUL in a header value")
        if name[:1] == b":":
            if regular:
                raise HttpError(400, "a pseudo-header after a regular field")
            if name == b":method" and not method:
                method = value
            elif name == b":path" and not path:
                path = value
            elif name == b":authority" and not authority:
                authority = value
            elif name == b":scheme" and not scheme:
                scheme = value  # the upstream is spoken to in plain HTTP/1.1 whatever it says
            else:
                raise HttpError(400, "unknown or repeated pseudo-header")
            continue
        regular = True
        if _TOKEN.fullmatch(name) is None:
            raise HttpError(400, "invalid header field name")
        value = value.strip(b" \t")
        if name in _CONNECTION_FIELDS or name == b"proxy-connection" or (name == b"te" and value != b"trailers"):
            raise HttpError(400, "connection-specific header field")
        if name == b"cookie":
            cookies.append(value)
        elif name in SPECIAL or name[:6] == b"proxy-":
            special.append((name, value))
        else:
            lines.append(name + b": " + value + b"\r\n")
    if not method or not scheme or not path:
        raise HttpError(400, "missing pseudo-header")
    if cookies:
        lines.append(b"cookie: " + b"; ".join(cookies) + b"\r\n")
    if len(lines) + len(special) > limits.max_headers:
        raise HttpError(431, "too many header fields")
    if method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by a reverse proxy")
    if len(path) > limits.max_uri_size:
        raise HttpError(414, "request target too long")
    if not path.startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
        raise HttpError(400, "invalid :path")
    head = RequestHead(method, path, VERSION, lines, special, size)
    for lname, value in special:
        if lname == b"host":
            if not authority:
                authority = value
        elif lname == b"content-length":
            if not value.isdigit():
                raise HttpError(400, "invalid Content-Length")
            head.content_length = int(value)
        elif lname == b"x-forwarded-for":
            head.forwarded_for = value if head.forwarded_for is None else head.forwarded_for + b", " + value
        elif lname == b"via":
            head.via = value if head.via is None else head.via + b", " + value
        elif lname == b"expect":
            if value.lower() != b"100-continue":
                raise HttpError(417, "unsupported expectation")
            head.expect_continue = True
    if not authority or not valid_host(authority):
        raise HttpError(400, "missing or invalid :authority")
    head.host_header = authority
    head.host = known_host(authority)
    if ended:
        head.content_length = None  # END_STREAM on the head: no body, whatever it said
    elif head.content_length is None:
        head.chunked = True  # a body of unknown length goes upstream chunked
    limit = limits.client_max_body_size
    if limit and head.content_length is not None and head.content_length > limit:
        raise HttpError(413, "request body too large")
    return head


def unreadable_head() -> RequestHead:
    """The head a refused request is logged with."""
    return RequestHead(b"-", b"-", VERSION, [], [])


class H2Stream(ClientSide):
    # What most streams never change is a class default (see Exchange).
    exchange: H2Exchange | None = None
    closed = False  # reset, or its connection is gone: nothing more is sent
    writing_paused = False  # the exchange's upstream is held back (this stream's window, or the connection's)
    request_ended = False  # END_STREAM came from the client
    answered = False  # our END_STREAM is sent or queued
    over = False  # the exchange is accounted for
    status = 0
    body_bytes = 0
    unacked = 0  # request body received while paused: window given back on resume
    pending_size = 0  # response bytes waiting for window
    pending_end = False
    admission: Admission | None = None  # limit_conn places held until the stream is over (edge/guard.py)
    progress_at = 0.0  # the client's last sign of life on this stream: body bytes, or window for our answer
    tls_version: str | None = None

    def __init__(self, owner: StreamOwner, state: WorkerState, stream_id: int, head: RequestHead, listener: str,
                 started_at: float, peer: str, client_ip: bytes, max_body: int):
        self.owner = owner
        self.state = state
        self.stream_id = stream_id
        self.head = head
        self.listener = listener
        self.started_at = started_at
        self.peer = peer
        self.client_ip = client_ip
        self.max_body = max_body
        self.pending: deque[bytes] = deque()
        self._pause_reasons: set[str] = set()
        self.progress_at = started_at

    @property
    def reading_paused(self) -> bool:
        """We hold the client's body back (its window is not given): its silence is not its fault."""
        return bool(self._pause_reasons)

    def start(self, group: UpstreamGroup, path: bytes, plan: EdgePlan | None, compress: CompressPolicy | None) -> None:
        """Forward the request to `group` (`plan`: its edge rules, `compress`: its route's gzip/brotli policy, as
        an HTTP/1.1 request's)."""
        if self.closed:
            return  # reset while limit_req held it back
        exchange = H2Exchange(self, self.state, self.head, path, group, self.started_at, self.client_ip, plan)
        exchange.compress = compress
        self.exchange = exchange
        exchange.begin()

    # from the connection: the client's side of the stream

    def body_received(self, data: bytes, flow_size: int) -> None:
        self.body_bytes += len(data)
        exchange = self.exchange
        if self.max_body and self.body_bytes > self.max_body:
            if exchange is not None:
                exchange.request_error(HttpError(413, "request body too large"))
            self.owner.give_window(self, flow_size)
            return
        if exchange is not None and not exchange.finished:
            exchange.request_body(data)
        if self._pause_reasons:
            self.unacked += flow_size
        else:
            self.owner.give_window(self, flow_size)

    def ended(self) -> None:
        self.request_ended = True
        head = self.head
        if head.content_length is not None and self.body_bytes != head.content_length:
            if self.exchange is not None:
                self.exchange.request_error(HttpError(400, "body length differs from Content-Length"))
            return
        if self.exchange is not None and not self.exchange.finished:
            self.exchange.request_end()

    def reset(self) -> None:
        """The client reset the stream, or the connection is gone."""
        self.closed = True
        self.pending.clear()
        self.pending_size = 0
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            exchange.client_gone()  # its exchange_finished accounts for it
        elif not self.over:
            self.over = True
            self._account(499, None)
            self.owner.stream_over(self, False)

    def hold_upstream(self, hold: bool) -> None:
        if hold != self.writing_paused:
            self.writing_paused = hold
            exchange = self.exchange
            if exchange is not None and not exchange.finished:
                if hold:
                    exchange.client_write_paused()
                else:
                    exchange.client_write_resumed()

    # ClientSide: what the exchange asks

    def write(self, data: bytes) -> None:
        raise RuntimeError("an HTTP/2 stream takes frames, not HTTP/1.1 bytes")

    def write_eof(self) -> None:
        pass

    def pause_reading(self, reason: str) -> None:
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._pause_reasons:
            self._pause_reasons.discard(reason)
            if not self._pause_reasons and self.unacked:
                size, self.unacked = self.unacked, 0
                self.owner.give_window(self, size)

    def may_keep_alive(self) -> bool:
        return True  # the connection outlives the stream; draining is the connection's GOAWAY

    def start_tunnel(self, tunnel: Tunnel, idle_timeout: float) -> None:
        raise RuntimeError("no upgrades on HTTP/2")

    def exchange_finished(self, exchange: Exchange, keep_alive: bool, abort: bool = False) -> None:
        if self.over:
            return
        self.over = True
        self.status = exchange.status
        self._account(exchange.status, exchange)
        self.owner.stream_over(self, abort)

    # responses, as the exchange (or the stream itself) gives them

    def respond(self, status: int, lines: list[bytes], content_length: int | None, end: bool) -> None:
        headers = [(b":status", b"%d" % status)]
        for line in lines:
            colon = line.index(b":")
            headers.append((line[:colon].lower(), line[colon + 2:-2]))
        if content_length is not None:
            headers.append((b"content-length", b"%d" % content_length))
        if end:
            self.answered = True
        self.owner.send_head(self, headers, end)

    def send(self, data: bytes, end: bool) -> None:
        if end:
            self.answered = True
        self.owner.send_body(self, data, end)

    def answer(self, status: int, headers: bytes = b"") -> None:
        """The proxy's own answer on this stream, as HTTP/1.1 would give it (404 without a route, 502, ...);
        `headers`: more header lines (a 401's WWW-Authenticate, a redirect's Location)."""
        reply = msg.error_response(status, True, head_only=self.head.method == b"HEAD")
        if headers:
            reply = reply.replace(b"\r\n", b"\r\n" + headers, 1)
        self.answer_reply(reply)

    def answer_reply(self, reply: bytes) -> None:
        """An answer the proxy made as HTTP/1.1 bytes (its errors, an edge rule's return), sent as HEADERS and
        DATA: the proxy's own answers are made in one place for both versions."""
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        kept = [line + b"\r\n" for line in lines[1:] if line[:line.find(b":")].lower() not in _CONNECTION_FIELDS]
        if self.closed:
            pass
        elif body and self.head.method != b"HEAD":
            self.respond(status, kept, None, False)
            self.send(body, True)
        else:
            self.respond(status, kept, None, True)
        if self.exchange is None and not self.over:
            self.over = True
            self.status = status
            self._account(status, None)
            self.owner.stream_over(self, False)

    def _account(self, status: int, exchange: Exchange | None) -> None:
        now = self.state.loop.time()
        if self.admission is not None:
            self.admission.release()
            self.admission = None
        if exchange is None:
            self.state.request_finished(self.listener, None, status, now - self.started_at, None, None, self.head,
                                        self.client_ip, 0, self.tls_version)
            return
        ended = exchange.ended_at or now
        self.state.request_finished(self.listener, exchange.upstream_name, status, ended - exchange.started_at,
                                    exchange.upstream_time, exchange.upstream_addr, self.head, self.client_ip,
                                    exchange.bytes_sent, self.tls_version)


class H2Exchange(Exchange):
    """An Exchange whose client is an HTTP/2 stream: the retry, balancing and pooling are Exchange's own;
    only what reaches the client's wire differs (no re-chunking, no Connection header, no 101)."""

    def __init__(self, stream: H2Stream, state: WorkerState, head: RequestHead, path: bytes, group: UpstreamGroup,
                 started_at: float, client_ip: bytes, plan: EdgePlan | None):
        super().__init__(stream, state, head, path, group, started_at, client_ip, plan)
        self.stream = stream

    def upstream_data(self, response: UpstreamResponse | None, body: list[bytes], complete: bool, now: float) -> None:
        if self.phase == Phase.FINISHED:
            return
        stream = self.stream
        lines: list[bytes] = []  # the response head's, when it came in this read
        content_length: int | None = None
        if response is not None:
            if not self._take_response(response, now):
                return  # refused: the attempt failed (and may be retried)
            self.phase = Phase.RELAYING
            self.body.stop_replay()
            lines = response.lines
            if self.compress is not None:  # edge/compress.py, as for HTTP/1.1; DATA frames need no Content-Length
                lines, self.encoder = start_encoding(self.compress, self.head, response)
            content_length = None if response.chunked or response.until_close or self.encoder is not None \
                else response.content_length
            if stream.added_headers:  # HSTS over TLS
                lines = [*lines, stream.added_headers]
        encoder = self.encoder
        if encoder is not None and (body or complete):
            data = encoder.feed(body, complete)
            body = [data] if data else []
        if response is not None:
            stream.respond(response.status, lines, content_length, complete and not body)
        if body:
            data = body[0] if len(body) == 1 else b"".join(body)
            self.bytes_sent += len(data)
            stream.send(data, complete)
        elif complete and response is None:
            stream.send(b"", True)
        if response is not None:
            self._attempt_over(None)
        if complete:
            self._response_complete(now, True)

    def _answer_error(self, status: int, keep_alive: bool) -> None:
        # The stream ends; the connection goes on. The request id and `always` response rules, as HTTP/1.1's.
        self.stream.answer(status, self.edge.answer_lines(status) if self.edge is not None else b"")
