"""Accepting TLS connections on a listener: the first bytes, the handshake, then the listener's protocol.

A connection first meets `_FirstBytes`, which waits (up to the handshake deadline) for the client's
first bytes. A TLS record goes on to uvloop's SSL layer (its Cython `SSLProtocol`, with the rest of the
deadline), which then carries the connection; a plain HTTP request gets nginx's answer to it, a 400,
and anything else a close. `_Handshake` is both the SSL layer's application protocol until the
handshake ends and its "waiter": it hears every ending exactly once (done, failed with OpenSSL's
reason, timed out, or the client gone), counts it, gives the connection slot back when it failed, and
on success hands the connection to the protocol the listener chose (`choose`, given the ALPN
protocol) without a copy: uvloop's SSL transport simply gets a new protocol.
A PROXY header before TLS (`proxy_protocol` with `ssl`) is read by edge/proxy_protocol.py's gate, which
hands the connection to `_FirstBytes`; its client address goes on to the protocol chosen after the handshake.
Where the C engine is built (tls/native.py), a listener's connections go there instead: `native_side`
makes its side of the listener, and the engine calls `established` and `failed` with the same counts.
docs/architecture.md, "TLS" and "Native paths".
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final

from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]  # uvloop's Cython SSL layer; not in its stubs

from ukproxy.config import ListenConfig
from ukproxy.protocol import Event
from ukproxy.proxy import http_messages as msg
from ukproxy.tls.context import ServerContexts, build_server_contexts
from ukproxy.tls.native import NativeTlsListener, native_listener
from ukproxy.tls.tickets import SharedTicketKeys
from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.tls")

TLS_HANDSHAKE_RECORD: Final = 0x16
# First bytes of an HTTP/1.x request line (GET, POST, HEAD, PUT, DELETE, OPTIONS, PATCH, CONNECT, TRACE).
_HTTP_METHOD_LETTERS: Final = frozenset(b"GPHDOCT")

# handshake failure reasons, the `reason` label of ukproxy_tls_handshake_failures
PLAIN_HTTP: Final = "plain_http"
NOT_TLS: Final = "not_tls"
TIMEOUT: Final = "timeout"
CLIENT_CLOSED: Final = "client_closed"
NO_SHARED_CIPHER: Final = "no_shared_cipher"
PROTOCOL_VERSION: Final = "protocol_version"
CLIENT_ALERT: Final = "client_alert"
TLS_ERROR: Final = "tls_error"
CLIENT_CERTIFICATE: Final = "client_certificate"  # ssl_verify_client: none sent, or one that does not verify
_REASONS: Final = {
    "HTTP_REQUEST": PLAIN_HTTP,
    "HTTPS_PROXY_REQUEST": PLAIN_HTTP,
    "NO_SHARED_CIPHER": NO_SHARED_CIPHER,
    "NO_SHARED_GROUPS": NO_SHARED_CIPHER,
    "NO_SUITABLE_KEY_SHARE": NO_SHARED_CIPHER,
    "NO_SUITABLE_SIGNATURE_ALGORITHM": NO_SHARED_CIPHER,
    "NO_SHARED_SIGNATURE_ALGORITHMS": NO_SHARED_CIPHER,
    "UNSUPPORTED_PROTOCOL": PROTOCOL_VERSION,
    "VERSION_TOO_LOW": PROTOCOL_VERSION,
    "VERSION_TOO_HIGH": PROTOCOL_VERSION,
    "WRONG_VERSION_NUMBER": PROTOCOL_VERSION,
    "TLSV1_ALERT_PROTOCOL_VERSION": PROTOCOL_VERSION,
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": CLIENT_CERTIFICATE,
    "CERTIFICATE_VERIFY_FAILED": CLIENT_CERTIFICATE,
}


def failure_reason(exc: BaseException | None) -> str:
    """The metric label for how a handshake ended without a session."""
    if exc is None:
        return CLIENT_CLOSED
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _REASONS:
            return _REASONS[reason]
        return CLIENT_ALERT if reason.startswith(("TLSV1_ALERT", "SSLV3_ALERT")) else TLS_ERROR
    if isinstance(exc, ConnectionAbortedError):  # uvloop's SSL layer: the handshake deadline passed
        return TIMEOUT
    return CLIENT_CLOSED  # a reset, a broken pipe: the client went away


ChooseProtocol = Callable[[str | None], asyncio.Protocol]


class TlsListener:
    """One TLS listener in one worker: its protocol factory for the accept cycle, and its counters."""

    def __init__(self, state: WorkerState, listener: str, contexts: ServerContexts, handshake_timeout: float,
                 choose: ChooseProtocol, engine: str = "native"):
        self.state = state
        self.loop = state.loop
        self.listener = listener
        self.contexts = contexts  # held for as long as connections may use them (and their ticket callback)
        self.context = contexts.default
        self.handshake_timeout = handshake_timeout  # more than 0 (tls/config.py)
        # The listener's protocol for a finished handshake, by the ALPN protocol agreed (None: none was).
        self.choose = choose
        # The C engine's side when it serves this listener (tls/native.py); the accept cycle hands it the
        # connections. None: uvloop's server and SSL layer, through protocol_factory (this object's call).
        self.native: NativeTlsListener | None = None
        self.engine = engine  # ssl_engine: "python" keeps this listener on uvloop's SSL layer
        self._handshake_keys: dict[str, tuple[Event, str, str]] = {}  # by TLS version, for `established`

    def protocol_factory(self) -> asyncio.Protocol:
        return _FirstBytes(self)

    __call__ = protocol_factory  # the accept cycle's factory is the listener itself

    def native_side(self) -> NativeTlsListener | None:
        """The C engine's side of this listener (tls/native.py), made on first ask; None: the uvloop path.
        The worker asks for a listener whose connections start with TLS (not with a PROXY header)."""
        if self.native is None and self.engine == "native":
            self.native = native_listener(self, msg.error_response(400, keep_alive=False))
        return self.native

    def established(self, transport: Any) -> asyncio.Protocol:
        """The C engine's handshake ended well: counted, and the protocol for `transport` (which answers
        the ssl_object's questions itself) chosen by the ALPN protocol agreed. Once per new connection and
        interpreted (this module is not compiled), so `succeeded`'s count is inlined: one dict update on a
        key made once per TLS version, not a method call building its key each time."""
        version = transport.version() or ""
        key = self._handshake_keys.get(version)
        if key is None:
            key = self._handshake_keys[version] = (Event.TLS_HANDSHAKE, self.listener, version)
        counters = self.state.counters
        counters[key] = counters.get(key, 0) + 1
        if transport.session_reused:
            self.state.count(Event.TLS_RESUMPTION, self.listener)
        return self.choose(transport.selected_alpn_protocol())

    def failed(self, reason: str, exc: BaseException | str | None = None) -> None:
        self.state.count(Event.TLS_HANDSHAKE_FAILED, self.listener, reason)
        if reason not in (CLIENT_CLOSED, TIMEOUT):
            log.info("tls %s: handshake failed: %s%s", self.listener, reason, f" ({exc})" if exc else "")
        self.state.connection_closed()

    def succeeded(self, ssl_object: Any) -> None:
        self.state.count(Event.TLS_HANDSHAKE, self.listener, ssl_object.version() or "")
        if ssl_object.session_reused:
            self.state.count(Event.TLS_RESUMPTION, self.listener)


class _FirstBytes(asyncio.Protocol):
    """Until the client's first bytes: a TLS ClientHello, a plain HTTP request, or something else."""

    __slots__ = ("listener", "proxied", "started", "timer", "transport")

    def __init__(self, listener: TlsListener):
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = 0.0
        self.proxied: tuple[Any, Any] | None = None  # a PROXY header's (source, destination), for the app

    def set_proxied_addresses(self, source: Any, destination: Any) -> None:
        """A PROXY header came before TLS (edge/proxy_protocol.py): its client goes to the protocol after the
        handshake, which learns it as if the header had come to it."""
        self.proxied = (source, destination)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        listener = self.listener
        self.started = listener.loop.time()
        self.timer = listener.loop.call_later(listener.handshake_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        self.transport = None  # this protocol's part is over, whatever the bytes are
        self._cancel_timer()
        listener = self.listener
        if data[0] == TLS_HANDSHAKE_RECORD:
            left = listener.handshake_timeout - (listener.loop.time() - self.started)
            handshake = _Handshake(listener, self.proxied)
            ssl_protocol = SSLProtocol(listener.loop, handshake, listener.context, handshake, server_side=True,
                                       ssl_handshake_timeout=max(left, 0.001))
            transport.set_protocol(ssl_protocol)
            ssl_protocol.connection_made(transport)
            _feed(ssl_protocol, data)
        elif data[0] in _HTTP_METHOD_LETTERS:
            # nginx's answer: "The plain HTTP request was sent to HTTPS port".
            transport.write(msg.error_response(400, keep_alive=False))
            transport.close()
            listener.failed(PLAIN_HTTP)
        else:
            transport.abort()
            listener.failed(NOT_TLS)

    def eof_received(self) -> bool:
        return False  # close: nothing came before the end

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:  # gone before a first byte
            self.transport = None
            self._cancel_timer()
            self.listener.failed(CLIENT_CLOSED)

    def _timed_out(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is not None:
            self.transport = None
            transport.abort()
            self.listener.failed(TIMEOUT)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _feed(protocol: Any, data: bytes) -> None:
    """Give bytes already read to a buffered protocol, as the transport would have."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class _Handshake(asyncio.Protocol):
    """The SSL layer's application protocol and waiter while the handshake runs (see the module doc)."""

    __slots__ = ("ended", "listener", "proxied")

    def __init__(self, listener: TlsListener, proxied: tuple[Any, Any] | None = None):
        self.listener = listener
        self.ended = False
        self.proxied = proxied

    # as the application protocol: called once the handshake is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.ended = True
        listener = self.listener
        ssl_object = transport.get_extra_info("ssl_object")
        listener.succeeded(ssl_object)
        app = listener.choose(ssl_object.selected_alpn_protocol())
        transport.set_protocol(app)  # type: ignore[attr-defined]
        app.connection_made(transport)
        if self.proxied is not None:
            app.set_proxied_addresses(*self.proxied)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:  # never: the application protocol is swapped first
        raise RuntimeError("data before the handshake ended")

    def connection_lost(self, exc: Exception | None) -> None:  # never: the SSL layer tells the waiter
        pass

    # as the waiter (an asyncio.Future to uvloop's SSL layer): how the handshake ended

    def cancelled(self) -> bool:
        return False

    def set_result(self, result: object) -> None:
        if not self.ended:  # the connection closed before the handshake finished
            self.ended = True
            self.listener.failed(CLIENT_CLOSED)

    def set_exception(self, exc: BaseException) -> None:
        if not self.ended:
            self.ended = True
            self.listener.failed(failure_reason(exc), exc)


def quiet_handshake_errors(loop: asyncio.AbstractEventLoop) -> None:
    """uvloop's SSL layer reports a client's TLS error to the loop's exception handler, with a traceback;
    those are counted (`ukproxy_tls_handshake_failures`) and logged in one line instead."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("protocol"), SSLProtocol) and isinstance(context.get("exception"), ssl.SSLError):
            log.debug("tls: %s: %s", context.get("message"), context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def tls_protocol_factory(state: WorkerState, listen: ListenConfig, tickets: SharedTicketKeys | None,
                         choose: ChooseProtocol, alpn: tuple[str, ...] = ()) -> Callable[[], asyncio.Protocol]:
    """The accept cycle's protocol factory for a TLS listener: its contexts built (certificates read now),
    `choose` giving the protocol for each finished handshake by its ALPN protocol (`alpn` offers them)."""
    assert listen.tls is not None
    contexts = build_server_contexts(listen.tls, listen.address, tickets, alpn)
    return TlsListener(state, listen.address, contexts, listen.tls.handshake_timeout, choose, listen.tls.engine)
