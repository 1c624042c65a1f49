"""The tunnel after a 101 (Switching Protocols): bytes both ways between the client and the upstream
connection, as they come, until both sides have said EOF or either side is gone.

Flow control as in a tcp splice: a side that cannot keep up pauses reading on the other. Idle time is
the client connection's to watch (its "tunnel" timer, which calls `close`). At the end the exchange that
opened the tunnel accounts for the request (`on_closed`, with the bytes the client was sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ukproxy.proxy.http_upstream import UpstreamConnection


class TunnelClient(Protocol):
    """What the tunnel asks of the client connection (http.HttpClientConnection)."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def resume_reading(self, reason: str) -> None: ...


class Tunnel:
    eofs = 0  # sides that said EOF
    bytes_to_client = 0
    closed = False

    def __init__(self, client: TunnelClient, upstream: UpstreamConnection, on_closed: Callable[[int], None]):
        self.client = client
        self.upstream: UpstreamConnection | None = upstream
        self.on_closed = on_closed

    # the client connection's events

    def from_client(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.send(data)

    def client_eof(self) -> None:
        if self.upstream is not None:
            self.upstream.write_eof()
        self._eof()

    def client_gone(self) -> None:
        self._end(abort=True)

    def client_write_paused(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # the upstream connection's events (http_upstream.TunnelSink)

    def from_upstream(self, data: bytes) -> None:
        self.bytes_to_client += len(data)
        self.client.write(data)

    def upstream_eof(self) -> None:
        self.client.write_eof()
        self._eof()

    def upstream_lost(self) -> None:
        self.upstream = None
        self.close()

    def upstream_write_paused(self) -> None:
        self.client.pause_reading("upstream")

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading("upstream")

    # the end

    def close(self) -> None:
        """Either side is gone, both said EOF, or the tunnel stayed idle too long: close the other side."""
        self._end(abort=False)

    def _eof(self) -> None:
        self.eofs += 1
        if self.eofs >= 2:
            self.close()

    def _end(self, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if abort:
                conn.abort()
            else:
                conn.close()
        self.on_closed(self.bytes_to_client)
