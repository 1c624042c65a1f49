"""TLS listeners served in C (ukproxy/native/tls_transport.c): accept, handshake and records on the socket.

One engine per worker loop, watched with one add_reader, owns each connection from accept to close: it
reads the first bytes (plain HTTP gets nginx's 400), does the handshake on OpenSSL's socket BIO with
the SSL_CTX of the contexts tls/context.py built (SNI chosen in C, as tls/sni.py does), and then is the
asyncio transport of the protocol the listener chooses by ALPN. Python hears of a connection when it is
accepted (the accept cycle's count), when its handshake ends (`TlsListener.established` / `failed`),
and through the protocol's own callbacks. Used for every TLS listener when the module is built, unless
UKPROXY_PURE_PYTHON=1, UKPROXY_NATIVE_TLS=0, or the listener reads a PROXY header first: those keep
tls/acceptor.py's uvloop path. docs/architecture.md, "Native paths".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ukproxy import native

if TYPE_CHECKING:
    from ukproxy.tls.acceptor import TlsListener
    from ukproxy.tls.tickets import SharedTicketKeys

log = logging.getLogger("ukproxy.tls")

ENV = "UKPROXY_NATIVE_TLS"  # "0": tls/acceptor.py's uvloop path even where the C module is built (bench A/B)

_engines: dict[asyncio.AbstractEventLoop, Any] = {}
_following: dict[SharedTicketKeys, bool] = {}  # the worker's keys, handed to the C module (one per process)


def _engine(loop: asyncio.AbstractEventLoop, module: Any) -> Any:
    engine = _engines.get(loop)
    if engine is None:
        engine = _engines[loop] = module.Engine(loop)
        loop.add_reader(engine.fileno(), engine.poll)
    return engine


def native_listener(listener: TlsListener, plain_answer: bytes) -> NativeTlsListener | None:
    """The C engine's side of a TLS listener, or None for the uvloop path."""
    if os.environ.get(ENV) == "0":
        return None
    module = native.load("tls_transport")
    if module is None:
        return None
    contexts = listener.contexts
    try:
        # Tickets under the workers' shared keys: issued and read in C, the keys followed across rotations.
        if contexts.tickets_shared and contexts.tickets is not None and not _following.get(contexts.tickets):
            contexts.tickets.follow(lambda keys: module.set_ticket_keys([k.to_bytes() for k in keys]))
            _following[contexts.tickets] = True
        c_listener = _engine(listener.loop, module).listener(
            context=contexts.default, sni=contexts.by_name, timeout=listener.handshake_timeout,
            established=listener.established, failed=listener.failed, plain_answer=plain_answer,
            tickets=contexts.tickets_shared)
    except OSError as e:
        log.warning("tls %s: served by uvloop's SSL layer: %s", listener.listener, e)
        return None
    log.info("tls %s: served in C (%s)", listener.listener, module.OPENSSL_VERSION)
    return NativeTlsListener(c_listener)


class _Accepting:
    """The accept cycle's handle on a listening socket the engine accepts on: close() to pause."""

    __slots__ = ("c_listener",)

    def __init__(self, c_listener: Any):
        self.c_listener = c_listener

    def close(self) -> None:
        self.c_listener.stop_accepting()


class NativeTlsListener:
    """What the accept cycle hands connections to (the same shape as proxy/tcp_native.NativeListener)."""

    def __init__(self, c_listener: Any):
        self.c_listener = c_listener
        self.served = 0  # connections given to the engine (tests show the C path is the one used)

    def listen(self, fd: int, accepted: Callable[[Any], Any]) -> _Accepting:
        """Accept on `fd` (a duplicate, the engine's from now on); `accepted(transport)` counts, None refuses."""
        self.c_listener.accept_on(fd, accepted)
        return _Accepting(self.c_listener)

    def adopt(self, fd: int) -> None:
        """A connection accepted and counted by Python (the accept mutex's mode)."""
        self.served += 1
        self.c_listener.adopt(fd)

    def accepted(self, transport: Any) -> Any:
        self.served += 1
        return transport
