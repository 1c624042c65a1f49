"""One HTTP/1.1 connection to an upstream server: sends a request, parses the response, reports to its user.

A connection serves one exchange at a time (no pipelining upstream) and may then be parked in the
worker's keep-alive pool. Responses are parsed with httptools' HttpResponseParser; interim 1xx
responses (other than 101) are dropped, as nginx does. The parser's callbacks only record: what one
read brought (a head, body pieces, the end) reaches the exchange in one `upstream_data` call after
the parser returns, so a response that fits in one read costs one call and one client write. The read
timeout is nginx's: the longest gap between two reads while a response is awaited (suspended while
the client side holds us back).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, Protocol

import httptools

from ukproxy.proxy.http_request import connection_tokens, special_name
from ukproxy.upstream.keepalive import KeepalivePool
from ukproxy.upstream.server import Server

if TYPE_CHECKING:
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.http")

MAX_RESPONSE_HEAD: Final = 64 * 1024  # nginx's proxy_buffer_size is far smaller; past this the upstream is broken

# Why an attempt failed, as the exchange and the counters name it.
RESET: Final = "reset"
INVALID: Final = "invalid_response"
READ_TIMEOUT: Final = "read_timeout"
SEND_TIMEOUT: Final = "send_timeout"


# Response headers that are not passed on as they are: hop-by-hop ones (RFC 9110 7.6.1), and
# Content-Length, which the proxy writes itself with the framing it chooses.
_SPECIAL = frozenset((b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                      b"content-length"))
_USUAL_TOKENS = frozenset((b"keep-alive", b"close", b"upgrade"))  # Connection tokens that name no other header
# Header names as servers spell them → the lower-cased name when it is one of those, b"" when the header
# is passed on: one dict lookup per header instead of a lower(), a set lookup and a slice. Filled (and
# bounded) by http_request.special_name, which classifies a request's names the same way.
_NAMES: dict[bytes, bytes] = {}


class UpstreamResponse:
    """A response head as the exchange needs it. A plain class: compiled, its __init__ is native."""

    def __init__(self, status: int, reason: bytes, lines: list[bytes], keep_alive: bool, chunked: bool,
                 content_length: int | None, bodyless: bool, until_close: bool, upgrade: bytes | None = None):
        self.status = status
        self.reason = reason
        self.lines = lines  # the header lines to pass on ("Name: value\r\n"): hop-by-hop and Content-Length removed
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        self.bodyless = bodyless  # HEAD, 1xx, 204, 304
        self.until_close = until_close  # no framing: the body ends when the connection does
        self.upgrade = upgrade  # the Upgrade header of a 101


class ResponseSink(Protocol):
    """What an upstream connection reports to the exchange using it (http_exchange.Exchange)."""

    def upstream_data(self, response: UpstreamResponse | None, body: list[bytes], complete: bool, now: float
                      ) -> None: ...
    def upstream_failed(self, why: str, detail: str) -> None: ...
    def upstream_write_paused(self) -> None: ...
    def upstream_write_resumed(self) -> None: ...


class TunnelSink(Protocol):
    """What an upstream connection reports to the tunnel it carries after a 101 (http_tunnel.Tunnel)."""

    def from_upstream(self, data: bytes) -> None: ...
    def upstream_eof(self) -> None: ...
    def upstream_lost(self) -> None: ...
    def upstream_write_paused(self) -> None: ...
    def upstream_write_resumed(self) -> None: ...


class _BodylessDone(Exception):
    """Raised inside the parser to stop it after a response head that has no body (a HEAD answer)."""


class _OutOfStep(Exception):
    """Raised inside the parser when the server sends a response nobody asked for."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, state: WorkerState, server: Server, pool: KeepalivePool[UpstreamConnection],
                 read_timeout: float, send_timeout: float):
        self.state = state
        self.loop = state.loop
        self.server = server
        self.keepalive_pool = pool
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None  # while it carries an exchange's request and response
        self.tunnel: TunnelSink | None = None  # after a 101, instead
        self.requests = 0  # requests sent on this connection; > 1 means it was reused
        self.closed = False
        self.reusable = True
        self.got_bytes = False  # any byte of the current response
        self.reading_paused = False
        self.head_request = False
        self._gone = False  # cut off: its server went away
        self._response: UpstreamResponse | None = None
        self._head_done = False
        self._head_bytes = 0
        self._interim = False
        self._reason = b""
        self._lines: list[bytes] = []  # header lines passed on as they are
        self._special: list[tuple[bytes, bytes]] = []  # the others, name lower-cased
        # What the current read brought, for the exchange once the parser returns.
        self._new_head: UpstreamResponse | None = None
        self._body: list[bytes] = []
        self._complete = False
        self._last_read = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # used by the exchange

    def start(self, sink: ResponseSink, data: bytes, head_request: bool, now: float) -> None:
        """Send a request (head, and whatever body is already here) and await its response."""
        self.sink = sink
        self.requests += 1
        self.head_request = head_request
        self.got_bytes = False
        self._head_done = False
        self._head_bytes = 0
        self._response = None
        self.transport.write(data)  # type: ignore[union-attr]
        self._last_read = now
        if self._read_timer is None:  # else the one armed for an earlier request re-checks from _last_read
            self._arm_read_timer()

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    @property
    def reused(self) -> bool:
        """Taken from the keep-alive pool for the current request (not opened for it)."""
        return self.requests > 1

    def start_tunnel(self, tunnel: TunnelSink) -> None:
        """A 101 came: from now on bytes go both ways as they are, and the connection is never reused."""
        self.sink = None
        self.tunnel = tunnel
        self.reusable = False
        self._cancel_timers()

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and transport.can_write_eof():
            transport.write_eof()

    def release(self, whole_request_sent: bool = True) -> None:
        """The exchange is done with us: park in the pool if we can carry another request, else close (always
        when the server did not get the whole request: its state is unknown).
        Never called while the parser runs: what it found reaches the exchange after it returns."""
        self.sink = None
        if not whole_request_sent:
            self.reusable = False
        if self._send_timer is not None:  # the read timer stays: it finds no sink and lapses (cheaper than re-arming)
            self._cancel_send_timer()
        if self.reading_paused:
            self.resume_reading()
        if self.closed or not self.reusable or not self.keepalive_pool.put(self.server, self):
            self.close()

    def close(self) -> None:
        self.sink = None
        self.tunnel = None
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.sink = None
        self.tunnel = None
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self._last_read = self.loop.time()  # the wait was the client's, not the upstream's
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.upstream_opened()
        self.server.attach(self)

    def cut_off(self) -> None:
        """The server is gone: fail what we carry now (the exchange may retry elsewhere), not at a timeout."""
        self.reusable = False
        self._gone = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            if self.tunnel is not None:
                self.tunnel.from_upstream(data)
                return
            # Parked (or between users): a server speaking out of turn cannot be trusted with a request.
            self.reusable = False
            self.keepalive_pool.discard(self)
            self.close()
            return
        self.got_bytes = True
        self._last_read = now = self.loop.time()
        error: str | None = None
        upgrade_tail: bytes | None = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            upgrade_tail = data[e.args[0]:]
        except httptools.HttpParserCallbackError as e:
            context = e.__context__
            if isinstance(context, _BodylessDone):
                self.reusable = False  # we cannot know whether a body follows anyway: never reuse
                self._complete = True
            elif isinstance(context, _OutOfStep):
                self.reusable = False  # the response before it is still good
            else:
                log.exception("upstream %s: error parsing the response", self.server.name)
                error = f"callback: {e}"
        except httptools.HttpParserError as e:
            error = str(e)
        if error is not None:
            self.reusable = False
            if not self._complete:
                self._new_head, self._body = None, []
                self._fail(INVALID, error)
                return
        if not self._head_done:
            # Still in the head after this read (we never pipeline upstream, so every byte so far was head).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_RESPONSE_HEAD:
                self._fail(INVALID, "response head too large")
                return
        self._deliver(sink, now)  # not reusable after an error: the exchange's release closes us
        if upgrade_tail and self.tunnel is not None:  # the exchange took the 101 and started the tunnel
            self.tunnel.from_upstream(upgrade_tail)

    def _deliver(self, sink: ResponseSink, now: float) -> None:
        """Hand the exchange what this read brought. Last thing in data_received: on a complete response
        the exchange releases us, and the client's next request may take us from the pool at once."""
        response, body, complete = self._new_head, self._body, self._complete
        if response is None and not body and not complete:
            return
        self._new_head = None
        if body:
            self._body = []
        self._complete = False
        sink.upstream_data(response, body, complete, now)

    def eof_received(self) -> bool:
        sink = self.sink
        self.reusable = False
        if sink is None:
            if self.tunnel is not None:
                self.tunnel.upstream_eof()
                return True  # half-open: the client may still be talking
            return False
        if self._response is not None and self._response.until_close:
            self._cancel_send_timer()
            sink.upstream_data(None, [], True, self.loop.time())
        else:
            self._fail(RESET, "connection closed before the response was complete")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._cancel_timers()
        self.keepalive_pool.discard(self)
        self.server.detach(self)
        self.state.upstream_closed()
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.upstream_failed(RESET, "server went away" if self._gone else str(exc) if exc else
                                 "connection closed")
        elif self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.upstream_lost()

    def pause_writing(self) -> None:
        if self.send_timeout > 0:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timed_out)
        if self.sink is not None:
            self.sink.upstream_write_paused()
        elif self.tunnel is not None:
            self.tunnel.upstream_write_paused()

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.sink is not None:
            self.sink.upstream_write_resumed()
        elif self.tunnel is not None:
            self.tunnel.upstream_write_resumed()

    # httptools callbacks: they record, `_deliver` reports

    def on_message_begin(self) -> None:
        if self._complete:
            # A second response in one read, after ours was complete: the server is out of step.
            raise _OutOfStep()
        self._lines = []
        self._special = []
        self._reason = b""
        self._interim = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] in (32, 9):  # trailing space or tab: rare, so tested before stripping
            value = value.rstrip(b" \t")
        lname = _NAMES.get(name)
        if lname is None:
            lname = special_name(name, _SPECIAL, _NAMES)
        if lname:
            self._special.append((lname, value))
        else:
            self._lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True
            return
        self._head_done = True
        content_length = None
        chunked = False
        upgrade = None
        named: frozenset[bytes] = frozenset()
        for lname, value in self._special:
            if lname == b"content-length":
                content_length = int(value)  # llhttp allows digits only, and one value
            elif lname == b"transfer-encoding":
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif lname == b"connection":
                tokens = connection_tokens(value)  # split once per distinct value ("keep-alive" every time)
                named = tokens if not named else named | tokens
            elif lname == b"upgrade":
                upgrade = value
        lines = self._lines
        if named and not named <= _USUAL_TOKENS:  # Connection names other headers: they are hop-by-hop too
            lines = [line for line in lines if line[: line.index(b":")].lower() not in named]
        bodyless = self.head_request or status in (101, 204, 304)
        response = UpstreamResponse(
            status, self._reason, lines, self.parser.should_keep_alive(), chunked and not bodyless, content_length,
            bodyless, not bodyless and not chunked and content_length is None, upgrade,
        )
        self._response = self._new_head = response
        if response.until_close or not response.keep_alive:
            self.reusable = False
        if self.head_request:
            raise _BodylessDone()

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._head_bytes = 0
            return
        if self._response is not None and self._response.status == 101:
            return  # the tunnel starts; HttpParserUpgrade follows
        self._complete = True
        if self._send_timer is not None:
            self._cancel_send_timer()

    # internals

    def _fail(self, why: str, detail: str) -> None:
        self.reusable = False
        self._cancel_timers()
        sink, self.sink = self.sink, None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        if sink is not None:
            sink.upstream_failed(why, detail)

    def _arm_read_timer(self) -> None:
        if self.read_timeout > 0:
            self._read_timer = self.loop.call_at(self._last_read + self.read_timeout, self._read_check)

    def _read_check(self) -> None:
        # Re-armed lazily from the last read so that reads never touch the timer.
        self._read_timer = None
        if self.sink is None:  # parked, or a tunnel: no response awaited
            return
        if self.reading_paused or self.loop.time() - self._last_read < self.read_timeout:
            if self.reading_paused:
                self._last_read = self.loop.time()
            self._arm_read_timer()
            return
        self._fail(READ_TIMEOUT, f"no response within {self.read_timeout}s")

    def _send_timed_out(self) -> None:
        self._send_timer = None
        tunnel = self.tunnel
        if tunnel is not None:
            log.info("upstream %s: tunnel could not send for %ss, closing", self.server.name, self.send_timeout)
            self.abort()  # connection_lost will tell nobody: the tunnel hears it here
            tunnel.upstream_lost()
        elif self.sink is not None:
            self._fail(SEND_TIMEOUT, f"could not send for {self.send_timeout}s")

    def _cancel_timers(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._cancel_send_timer()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
