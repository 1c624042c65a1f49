"""Which HTTP a new connection of an `http2 = true` listener speaks (docs/architecture.md, "HTTP/2").

Over TLS, ALPN has already decided when the connection is made: "h2" gets the HTTP/2 protocol, anything
else HTTP/1.x. In the clear, a client with prior knowledge (h2c: `curl --http2-prior-knowledge`, `h2load
http://...`) opens with the HTTP/2 preface; any other first bytes are an HTTP/1.x request. The selector
reads until it can tell, then hands the transport (and the bytes) to the chosen protocol and is gone:
listeners without `http2` never meet it, and HTTP/1.x on one costs one object per connection.
"""

from __future__ import annotations

import asyncio
from typing import Final

from ukproxy.proxy.h2_connection import PREFACE, H2ClientConnection
from ukproxy.proxy.http import HttpClientConnection, HttpSite

H2_ALPN: Final = "h2"


class VersionSelector(asyncio.Protocol):
    def __init__(self, site: HttpSite):
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.seen = b""
        self.chosen: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.proxied: tuple[tuple[str, int], tuple[str, int] | None] | None = None

    def set_proxied_addresses(self, source: tuple[str, int], destination: tuple[str, int] | None) -> None:
        """A PROXY protocol header named the client (edge/proxy_protocol.py): for the protocol chosen."""
        self.proxied = (source, destination)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
            self._choose(H2ClientConnection(self.site) if alpn == H2_ALPN else HttpClientConnection(self.site), b"")
            return
        timeout = self.site.limits.client_header_timeout
        if timeout > 0:
            self._timer = self.site.state.loop.call_later(timeout, self._timed_out)
        self.site.state.drainable.add(self)  # a graceful stop closes it: it has not begun a request

    def data_received(self, data: bytes) -> None:
        seen = self.seen + data
        if len(seen) < len(PREFACE) and PREFACE.startswith(seen):
            self.seen = seen  # could still be the preface
            return
        http2 = seen.startswith(PREFACE)
        self._choose(H2ClientConnection(self.site) if http2 else HttpClientConnection(self.site), seen)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.chosen is None:  # gone before it said anything we could tell by
            self._cancel_timer()
            self.site.state.drainable.discard(self)
            self.site.state.connection_closed()

    # the worker's graceful stop (WorkerState.drainable)

    def drain(self) -> None:
        if self.chosen is None and self.transport is not None:
            self.transport.close()

    def phase(self) -> str:
        return "reading"

    def _choose(self, protocol: asyncio.Protocol, data: bytes) -> None:
        self._cancel_timer()
        self.site.state.drainable.discard(self)  # the chosen protocol registers itself
        transport = self.transport
        assert transport is not None
        self.chosen = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.proxied is not None:
            protocol.set_proxied_addresses(*self.proxied)  # type: ignore[attr-defined]
        if data:
            protocol.data_received(data)

    def _timed_out(self) -> None:
        self._timer = None
        if self.chosen is None and self.transport is not None:
            self.site.state.timeout_fired("client_header")
            self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
