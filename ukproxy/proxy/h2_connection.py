"""One HTTP/2 client connection: frames in and out with the `h2` library, streams onto the exchange machinery.

docs/architecture.md, "HTTP/2". The connection owns the h2 state machine, its limits and its timers; each
request is an `h2_stream.H2Stream` running the same routing, balancers, pools and keep-alive upstream
connections as HTTP/1.1. What one read brings is handled as a batch: requests whose END_STREAM came with
their head start after the batch, so a stream opened and reset in the same read never reaches an upstream.
Output is written once per read, and once per loop turn for what upstreams bring (`_flush_soon`), so the
answers of several streams share a write.

Limits: `http2_max_concurrent_streams` and `http2_max_header_list_size` are announced in SETTINGS and
enforced by h2 (a client over them gets a connection error); a header block held across CONTINUATION
frames is bounded by the same size; `h2_guard.FloodGuard` budgets resets and control frames.
`keepalive_requests` streams per connection, `keepalive_timeout` while no stream is open,
`client_header_timeout` until the client's preface and first SETTINGS.

Graceful stop and reload (`drain`) and `keepalive_requests` send GOAWAY with the last stream taken: streams
in flight finish, later ones are refused (REFUSED_STREAM, which clients retry elsewhere), and the connection
closes when the last is over. That GOAWAY is written here rather than by h2, whose state machine would
otherwise refuse the frames (WINDOW_UPDATE, DATA) the streams in flight still need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from ukproxy.protocol import Event
from ukproxy.proxy.h2_guard import FloodGuard
from ukproxy.proxy.h2_hpack import Decoder, StatelessEncoder
from ukproxy.proxy.h2_stream import OUT_HIGH, H2Stream, request_head, unreadable_head
from ukproxy.proxy.http import HttpSite, watch_write_stall
from ukproxy.proxy.http_request import HttpError
from ukproxy.tls.redirect import https_location

log = logging.getLogger("ukproxy.http2")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_MAX_WINDOW: Final = 2**31 - 1


def _config() -> H2Configuration:
    # Header lists are checked by h2_stream.request_head (compiled, and a third of h2's work on a request when
    # h2 does it); what we send is built by us from headers already cleaned upstream.
    return H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                           normalize_outbound_headers=False, validate_inbound_headers=False,
                           normalize_inbound_headers=False)


class H2ClientConnection(asyncio.Protocol):
    def __init__(self, site: HttpSite):
        self.site = site
        self.state = site.state
        self.loop = site.state.loop
        self.limits = limits = site.limits
        self.h2 = H2Connection(_config())
        # HPACK compiled (h2_hpack.py): h2 asks of them what it asks of hpack's Encoder and Decoder
        self.h2.encoder = StatelessEncoder()  # type: ignore[assignment]
        self.h2.decoder = Decoder()  # type: ignore[assignment]
        self.streams: dict[int, H2Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.guard = FloodGuard(limits, self.loop.time())
        self.header_block_limit = limits.http2_max_header_list_size
        self.peer = "-"
        self.peer_ip = b"-"
        self.tls_version: str | None = None  # "TLSv1.3" and the like over TLS, for the access log
        self.ssl_object: Any = None  # over TLS: what $ssl_client_* are read from (tls/client_certs.py)
        self.closed = False
        self.writing_paused = False
        self.requests = 0
        self.goaway_sent = False  # graceful: streams after `last_stream` are refused
        self.last_stream = 0
        self.preface_seen = False
        self._flush_pending = False
        self._to_start: list[H2Stream] = []
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._watch_timer: asyncio.TimerHandle | None = None  # client_body_timeout for streams (`_watch`)

    # asyncio.Protocol

    def set_proxied_addresses(self, source: tuple[str, int], destination: tuple[str, int] | None) -> None:
        """A PROXY protocol header named the client (edge/proxy_protocol.py): it is this connection's peer."""
        self.peer_ip = source[0].encode()
        self.peer = f"{source[0]}:{source[1]}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.peer = f"{peer[0]}:{peer[1]}"
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            self.ssl_object = ssl_object
        limits = self.limits
        h2 = self.h2
        # In force from our first SETTINGS frame on (h2 itself would wait for the client's acknowledgement).
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.http2_max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.http2_max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.http2_body_preread_size,
        })
        h2.decoder.max_header_list_size = limits.http2_max_header_list_size
        h2.initiate_connection()
        # h2 would make a stream past the limit a connection error; RFC 9113 5.1.2 wants a stream error. So h2
        # is told a higher limit than the client was, and `_request` refuses the extra stream (REFUSED_STREAM).
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: 2 * limits.http2_max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.http2_max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.http2_body_preread_size,
        })
        # The connection window is never what holds a stream back: each stream's window bounds what it buffers.
        extra = min(limits.http2_max_concurrent_streams * limits.http2_body_preread_size, _MAX_WINDOW) - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self._flush()
        self.state.drainable.add(self)
        self._idle_since = self.loop.time()
        self._arm(self.limits.client_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._received(data)
        except Exception:  # a bug of ours must cost this connection at most, never the worker's others
            log.exception("http2: internal error on the connection from %s", self.peer)
            self._refuse_connection("internal_error", ErrorCodes.INTERNAL_ERROR)

    def _received(self, data: bytes) -> None:
        h2 = self.h2
        try:
            events = h2.receive_data(data)
        except ProtocolError as e:
            # h2 has queued a GOAWAY with the error code; send it and close.
            reason = "header_flood" if "continuation" in str(e).lower() else "protocol_error"
            log.info("http2: %s from %s: %s", reason, self.peer, e)
            self._count_goaway(reason)
            self._close_after_flush()
            return
        # A header block held across CONTINUATION frames: bounded by the header list size we announced.
        held = h2.incoming_buffer._headers_buffer  # h2 keeps no byte count of its own (only 64 frames)
        if held and sum(len(frame.data) for frame in held) > self.header_block_limit:
            self._refuse_connection("header_flood", ErrorCodes.ENHANCE_YOUR_CALM)
            return
        now = self.loop.time()
        priority = None  # a HEADERS frame's own priority comes as an event too: not a PRIORITY frame
        for event in events:
            kind = type(event)
            if kind is RequestReceived:
                priority = event.priority_updated  # type: ignore[attr-defined]
                self._request(event, now)  # type: ignore[arg-type]
            elif kind is DataReceived:
                self._data(event, now)  # type: ignore[arg-type]
            elif kind is StreamEnded:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None and stream.exchange is not None:
                    stream.ended()
                elif stream is not None:
                    stream.request_ended = True
            elif kind is WindowUpdated:
                self._window_opened(event.stream_id)  # type: ignore[attr-defined]
            elif kind is StreamReset:
                self._reset_by_client(event.stream_id, now)  # type: ignore[attr-defined]
            elif kind is RemoteSettingsChanged:
                if self._control_frame(now):
                    return
                self._window_opened(0)  # INITIAL_WINDOW_SIZE may have grown every stream's window
            elif kind in (PingReceived, PriorityUpdated, UnknownFrameReceived):
                if event is not priority and self._control_frame(now):
                    return
            elif kind is ConnectionTerminated:
                self.goaway_sent = True  # the client said goodbye: no new streams either way
                self.last_stream = self.h2.highest_inbound_stream_id
            if self.closed:
                return
        if events:
            self.preface_seen = True
        if self._to_start:
            self._start_waiting()
        if self.goaway_sent and not self.streams:
            self._close_after_flush()
            return
        self._flush()

    def eof_received(self) -> bool:
        return False  # HTTP/2 has no half-close: the client is gone

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.drainable.discard(self)
        self.state.connection_closed()
        self._cancel_timers()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.reset()

    def pause_writing(self) -> None:
        """The client does not take our writes: read nothing more from it (its PINGs and SETTINGS would pile up
        acknowledgements) and hold back every stream's upstream."""
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        for stream in list(self.streams.values()):
            stream.hold_upstream(True)
        self._stall_timer = watch_write_stall(self.state, self.limits.client_body_timeout, self.transport, self.peer,
                                              "http2")

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            stream.hold_upstream(stream.pending_size > OUT_HIGH)

    # the worker's graceful stop (WorkerState.drainable)

    def drain(self) -> None:
        self._goaway("drain")

    def phase(self) -> str:
        if self.streams:
            return "writing"
        return "waiting" if self.preface_seen else "reading"

    # streams

    def _request(self, event: RequestReceived, now: float) -> None:
        stream_id = event.stream_id
        self.state.count(Event.HTTP2_STREAMS)
        if self.goaway_sent and stream_id > self.last_stream:
            self._reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= self.limits.http2_max_concurrent_streams:
            # Past what we announced. Counted by us: h2 has taken in the whole read before we see its events.
            self._reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.requests += 1
        limits = self.limits
        site = self.site
        ended = event.stream_ended is not None  # h2 gives the StreamEnded event, or None
        try:
            head = request_head(event.headers, ended, limits)  # type: ignore[arg-type]
        except HttpError as error:
            self.state.count(Event.HTTP_REJECTED, str(error.status))
            log.info("http2: %d %s from %s", error.status, error.reason, self.peer)
            head = None
            status = error.status
        client_ip = self.peer_ip
        if head is not None and site.real_ip is not None:
            client_ip = site.real_ip.client_ip(self.peer_ip, head)
        stream = H2Stream(self, self.state, stream_id, head or unreadable_head(), site.listener, now, self.peer,
                          client_ip, limits.client_max_body_size)
        stream.scheme = site.scheme
        stream.added_headers = site.added_headers
        stream.tls_version = self.tls_version
        self.streams[stream_id] = stream
        if head is None:
            stream.answer(status)
        elif ended:
            stream.request_ended = True
            self._to_start.append(stream)  # after this read: a reset in the same read saves the upstream its work
        else:
            self._start(stream)
            self._watch_soon()  # a body is to come
        if self.requests >= limits.keepalive_requests:
            self._goaway("keepalive_requests")

    def _start_waiting(self) -> None:
        waiting, self._to_start = self._to_start, []
        for stream in waiting:
            if not stream.closed:
                self._start(stream)

    def _start(self, stream: H2Stream) -> None:
        """What an HTTP/1.1 request meets in HttpClientConnection._start, in the same order: the https redirect,
        edge rules (rewrite, return, headers), guards (access, auth, limits), the route; then the exchange."""
        head = stream.head
        site = self.site
        client_ip = stream.client_ip
        match = site.router.match(head.host, head.path)
        plan = None
        if site.edge is not None:
            plan = site.edge.plan(head, match, client_ip, self.peer_ip)
            if plan is not None:  # None: no rule for this request
                match = plan.match
                plan.ssl_object = self.ssl_object
        admission = None
        if site.guards is not None:
            admission = site.guards.admit(match.route if match is not None else None, client_ip, head)
            if admission is not None and admission.held:
                stream.admission = admission
        if site.https_redirect is not None:
            stream.answer(301, https_location(head, site.https_redirect, site.listener))
        elif admission is not None and admission.status:
            stream.answer(admission.status, admission.headers if plan is None
                          else admission.headers + plan.answer_lines(admission.status))
        elif plan is not None and (match is None or plan.reply is not None):
            stream.answer_reply(plan.reply_bytes(True, head.method == b"HEAD"))
        elif match is None:
            stream.answer(404)
        else:
            assert match is not None
            if head.expect_continue and head.has_body:
                self.h2.send_headers(stream.stream_id, [(b":status", b"100")])
            path = match.path if plan is None or plan.path is None else plan.path
            group = site.groups[match.upstream]
            compress = site.compression.lookup(match.route) if site.compression is not None else None
            if admission is not None and admission.delay > 0.0:  # limit_req keeps to its rate
                self.loop.call_later(admission.delay, stream.start, group, path, plan, compress)
            else:
                stream.start(group, path, plan, compress)

    def _data(self, event: DataReceived, now: float) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        if not event.data and event.stream_ended is None and self._control_frame(now):
            return  # empty DATA frames: work for us, nothing for the request
        if stream is None or stream.closed:
            if size:
                self.h2.acknowledge_received_data(size, event.stream_id)
            return
        stream.progress_at = now
        stream.body_received(event.data, size)

    def _reset_by_client(self, stream_id: int, now: float) -> None:
        self.state.count(Event.HTTP2_RESETS, "received")
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.reset()  # the exchange (if any) ends; stream_over forgets the stream
        reason = self.guard.reset(now)
        if reason is not None:
            self._refuse_connection(reason, ErrorCodes.ENHANCE_YOUR_CALM)

    def _control_frame(self, now: float) -> bool:
        reason = self.guard.control_frame(now)
        if reason is None:
            return False
        self._refuse_connection(reason, ErrorCodes.ENHANCE_YOUR_CALM)
        return True

    # StreamOwner: what streams ask

    def send_head(self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if stream.closed or self.closed:
            return
        try:
            self.h2.send_headers(stream.stream_id, headers, end_stream=end)
        except (ProtocolError, StreamClosedError):
            stream.closed = True
            return
        self._flush_soon()

    def send_body(self, stream: H2Stream, data: bytes, end: bool) -> None:
        if stream.closed or self.closed:
            return
        if data:
            stream.pending.append(data)
            stream.pending_size += len(data)
        if end:
            stream.pending_end = True
        self._pump(stream)
        if stream.pending:  # the client's window is shut: from now on it has client_body_timeout to open it
            if stream.pending_size == len(data):
                stream.progress_at = self.loop.time()
            self._watch_soon()
        if stream.pending_size > OUT_HIGH or self.writing_paused:
            stream.hold_upstream(True)
        self._flush_soon()

    def give_window(self, stream: H2Stream, size: int) -> None:
        if self.closed:
            return
        try:
            self.h2.acknowledge_received_data(size, stream.stream_id)
        except (ProtocolError, StreamClosedError):
            return
        self._flush_soon()

    def stream_over(self, stream: H2Stream, abort: bool) -> None:
        """The exchange is accounted for. Aborted (the upstream failed mid-response): reset the stream. Else the
        stream goes once its last byte is out; a request the client is still sending is told to stop."""
        if abort and not stream.closed:
            self._reset_stream(stream.stream_id, ErrorCodes.INTERNAL_ERROR)
            stream.closed = True
        elif not stream.closed and not stream.pending and not stream.request_ended:
            self._reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
        self._forget_if_done(stream)
        self._flush_soon()

    # output

    def _pump(self, stream: H2Stream) -> None:
        """Send what the client's windows take of the stream's waiting response; END_STREAM after the last byte."""
        h2 = self.h2
        stream_id = stream.stream_id
        pending = stream.pending
        try:
            while pending:
                window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
                if window <= 0:
                    return
                data = pending[0]
                if len(data) <= window:
                    pending.popleft()
                    stream.pending_size -= len(data)
                    last = stream.pending_end and not pending
                    if last:
                        stream.pending_end = False
                    h2.send_data(stream_id, data, end_stream=last)
                else:
                    pending[0] = data[window:]
                    stream.pending_size -= window
                    h2.send_data(stream_id, data[:window])
            if stream.pending_end:  # the end came with no bytes of its own
                stream.pending_end = False
                h2.end_stream(stream_id)
        except (ProtocolError, StreamClosedError, FlowControlError) as e:
            log.debug("http2: stream %d of %s: %s", stream_id, self.peer, e)
            stream.closed = True
            pending.clear()
            stream.pending_size = 0
        self._forget_if_done(stream)

    def _window_opened(self, stream_id: int) -> None:
        streams = self.streams.values() if stream_id == 0 else [s for s in (self.streams.get(stream_id),) if s]
        now = self.loop.time()
        for stream in list(streams):
            if stream.pending or stream.pending_end:
                stream.progress_at = now
                self._pump(stream)
                if stream.pending_size <= OUT_HIGH and not self.writing_paused:
                    stream.hold_upstream(False)

    def _forget_if_done(self, stream: H2Stream) -> None:
        if stream.over and (stream.closed or not stream.pending) and self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if not self.streams and not self.closed:
                self._became_idle()

    def _flush_soon(self) -> None:
        if not self._flush_pending and not self.closed:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        if self.goaway_sent and not self.streams:
            self._close_after_flush()

    def _reset_stream(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except (ProtocolError, StreamClosedError):
            return
        self.state.count(Event.HTTP2_RESETS, "sent")

    # endings

    def _goaway(self, reason: str) -> None:
        """Graceful: no streams after the last one taken; those in flight finish, then the connection closes."""
        if self.goaway_sent or self.closed or self.transport is None:
            return
        self.goaway_sent = True
        self.last_stream = self.h2.highest_inbound_stream_id
        self._count_goaway(reason)
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream
        frame.error_code = ErrorCodes.NO_ERROR
        data = self.h2.data_to_send()  # what h2 queued goes first
        self.transport.write(data + frame.serialize())
        if not self.streams:
            self._close_after_flush()

    def _refuse_connection(self, reason: str, code: ErrorCodes) -> None:
        """An abusive client: GOAWAY with `code`, every stream ended, the connection closed."""
        if self.closed:
            return
        log.warning("http2: %s from %s: GOAWAY %s", reason, self.peer, code.name)
        self._count_goaway(reason)
        with contextlib.suppress(ProtocolError):
            self.h2.close_connection(error_code=code)
        self._close_after_flush()

    def _count_goaway(self, reason: str) -> None:
        self.state.count(Event.HTTP2_GOAWAYS, reason)

    def _close_after_flush(self) -> None:
        if self.closed or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)
        self.transport.close()  # uvloop writes out what is buffered first
        self.connection_lost(None)

    # timers: the preface (client_header_timeout), then idle between streams (keepalive_timeout)

    def _became_idle(self) -> None:
        self._idle_since = self.loop.time()
        if self._timer is None:
            self._arm(self.limits.keepalive_timeout)

    def _arm(self, timeout: float) -> None:
        if timeout > 0:
            self._timer = self.loop.call_at(self._idle_since + timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.closed or self.streams:
            return  # busy: armed again when the last stream goes
        timeout = self.limits.keepalive_timeout if self.preface_seen else self.limits.client_header_timeout
        if self.loop.time() + 0.001 < self._idle_since + timeout:
            self._arm(timeout)
            return
        self.state.timeout_fired("keepalive" if self.preface_seen else "client_header")
        self._goaway("idle")
        self._close_after_flush()

    def _watch_soon(self) -> None:
        timeout = self.limits.client_body_timeout
        if self._watch_timer is None and timeout > 0 and not self.closed:
            # Every half timeout: a stall is seen between one and one and a half timeouts after it began.
            self._watch_timer = self.loop.call_later(timeout / 2, self._watch)

    def _watch(self) -> None:
        """client_body_timeout per stream, as HTTP/1.1 has it: a body that stops coming gets a 408 (or, once the
        answer has begun, a reset), and an answer whose window the client leaves shut is reset (CANCEL)."""
        self._watch_timer = None
        if self.closed:
            return
        timeout = self.limits.client_body_timeout
        now = self.loop.time()
        watching = False
        for stream in list(self.streams.values()):
            if stream.closed:
                continue
            body_due = not stream.request_ended and not stream.over
            if not body_due and not stream.pending:
                continue
            if body_due and stream.reading_paused:
                stream.progress_at = now  # we hold it back
            if now - stream.progress_at < timeout:
                watching = True
                continue
            if body_due:
                self.state.timeout_fired("client_body")
                exchange = stream.exchange
                if exchange is not None and not exchange.finished:
                    exchange.request_error(HttpError(408, "client body timeout"))
                elif not stream.over:
                    stream.answer(408)
            else:
                self.state.timeout_fired("client_send")
                self._reset_stream(stream.stream_id, ErrorCodes.CANCEL)
                stream.reset()
        self._flush_soon()
        if watching:
            self._watch_soon()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._stall_timer, self._watch_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._stall_timer = self._watch_timer = None

