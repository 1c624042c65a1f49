"""What one worker knows about itself on the request path: its connections and its counters.

Per process and unshared (docs/architecture.md, "share nothing on the request path"). The accept
cycle reads `free_connections`; the metrics layer reads the counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ukproxy.metrics.buckets import LATENCY
from ukproxy.metrics.tally import RequestTally
from ukproxy.protocol import CounterKey, Event
from ukproxy.proxy.deadline_wheel import DeadlineWheel

if TYPE_CHECKING:
    from ukproxy.access_log import AccessLog

# Module constants, not Event.X: an enum's attribute costs compiled code a lookup on every bump.
UPSTREAM_FAILED: Final = Event.UPSTREAM_FAILED
NO_UPSTREAM: Final = Event.NO_UPSTREAM
TIMEOUT: Final = Event.TIMEOUT
UPSTREAM_RETRY: Final = Event.UPSTREAM_RETRY
REQUESTS_BY_PROTOCOL: Final = Event.REQUESTS_BY_PROTOCOL
# RequestHead.version → the `protocol` label of ukproxy_requests_by_protocol (ALPN's names)
_PROTOCOLS: Final = {b"1.1": "http/1.1", b"1.0": "http/1.0", b"2.0": "h2"}


class LoggedRequest(Protocol):
    """What the access log shows of an http request (the proxy's RequestHead)."""

    method: bytes
    target: bytes
    request_id: bytes | None  # with [request_id] (edge/http_edge.py)
    version: bytes  # b"1.1", b"2.0": the access log shows "HTTP/<version>"

    def header(self, lower_name: bytes) -> bytes | None: ...


class Drainable(Protocol):
    def drain(self) -> None: ...
    def phase(self) -> str: ...  # "reading" (a request head is arriving), "writing" (one in flight) or "waiting"


class WorkerState:
    def __init__(self, loop: asyncio.AbstractEventLoop, worker_id: int, worker_connections: int):
        self.loop = loop
        self.worker_id = worker_id
        self.worker_connections = worker_connections
        self.clients = 0  # client connections open now
        self.upstreams = 0  # upstream connections open now
        self.accepted = 0
        self.handled = 0
        # (Event, label, label) → running total. A plain dict bumped with get(): a Counter's `+=` costs
        # half as much again in compiled code.
        self.counters: dict[CounterKey, int] = {}
        # Called when a connection closes: the accept cycle may want another turn at the mutex.
        self.on_connection_closed: Callable[[], None] | None = None
        self.on_full: Callable[[], None] | None = None
        # Observability: plain tallies on the request path, moved into Prometheus once a second
        # (ukproxy.metrics.flush), and the access log (ukproxy.access_log), set by the worker.
        self.splicing = 0  # tcp splices: stub_status counts them as "writing"
        self.tally = RequestTally(LATENCY)
        self.access_log: AccessLog | None = None
        # Graceful stop: connections that can end their keep-alive at a request boundary register here
        # (every http client connection).
        self.draining = False
        self.drainable: set[Drainable] = set()
        # Client connections' deadlines: one loop timer for all of them, not one each (proxy/deadline_wheel.py).
        self.deadlines = DeadlineWheel(loop)

    # stub_status's reading and writing, counted when asked (once a second) rather than kept per request

    @property
    def reading(self) -> int:
        return sum(1 for connection in self.drainable if connection.phase() == "reading")

    @property
    def writing(self) -> int:
        return self.splicing + sum(1 for connection in self.drainable if connection.phase() == "writing")

    @property
    def free_connections(self) -> int:
        # As Nginx counts it: client and upstream connections share worker_connections.
        return self.worker_connections - self.clients - self.upstreams

    def begin_drain(self) -> None:
        """The worker stops: every keep-alive connection ends after its current (or next) request."""
        self.draining = True
        for connection in list(self.drainable):
            connection.drain()

    def connection_opened(self) -> None:
        self.clients += 1
        self.handled += 1

    def connection_closed(self) -> None:
        self.clients -= 1
        if self.on_connection_closed is not None:
            self.on_connection_closed()

    def upstream_opened(self) -> None:
        self.upstreams += 1
        if self.upstreams + self.clients >= self.worker_connections and self.on_full is not None:
            self.on_full()  # an upstream took the last free connection: stop accepting

    def upstream_closed(self) -> None:
        self.upstreams -= 1

    def count(self, event: Event, label: str = "", detail: str = "") -> None:
        """One more `event` (labels as `protocol.Event` lists them), flushed to its metric once a second."""
        key = (event, label, detail)
        self.counters[key] = self.counters.get(key, 0) + 1

    def upstream_failed(self, upstream: str, reason: str) -> None:
        key = (UPSTREAM_FAILED, upstream, reason)
        self.counters[key] = self.counters.get(key, 0) + 1

    def no_upstream(self, upstream: str) -> None:
        key = (NO_UPSTREAM, upstream, "")
        self.counters[key] = self.counters.get(key, 0) + 1

    def timeout_fired(self, which: str) -> None:
        key = (TIMEOUT, which, "")
        self.counters[key] = self.counters.get(key, 0) + 1

    # observability hooks, called by the proxies

    def request_finished(self, listener: str, upstream: str | None, status: int, request_time: float,
                         upstream_time: float | None, upstream_addr: str | None, request: LoggedRequest | None,
                         client_ip: bytes, bytes_sent: int, tls_version: str | None = None) -> None:
        """One HTTP request answered. Times in seconds; upstream and upstream_* None when no upstream answered;
        `request` None when its head was never read; `tls_version` None on a plain connection. Its text is
        made only for an access log."""
        self.tally.request(listener, upstream, status, request_time, upstream_time)
        if request is not None:
            key = (REQUESTS_BY_PROTOCOL, listener, _PROTOCOLS.get(request.version, "other"))
            self.counters[key] = self.counters.get(key, 0) + 1
        if self.access_log is not None:
            method, uri, user_agent, referer, request_id, protocol = "-", "-", None, None, None, "-"
            if request is not None:
                method, uri = request.method.decode(), request.target.decode("latin-1")
                protocol = "HTTP/" + request.version.decode()
                user_agent, referer = _text(request.header(b"user-agent")), _text(request.header(b"referer"))
                request_id = _text(request.request_id)
            self.access_log.request(listener, upstream, status, request_time, upstream_time, upstream_addr,
                                    method, uri, client_ip.decode(), bytes_sent, user_agent, referer, request_id,
                                    protocol, tls_version)

    def tcp_session_finished(self, listener: str, upstream: str, status: int, session_time: float,
                             connect_time: float | None, upstream_addr: str | None, client: str,
                             bytes_sent: int, bytes_received: int) -> None:
        """One TCP session closed: status 200 when an upstream was reached, 502 when none could be."""
        self.tally.tcp_session(listener, upstream, status, bytes_sent, bytes_received)
        if self.access_log is not None:
            self.access_log.tcp_session(listener, upstream, status, session_time, connect_time, upstream_addr,
                                        client, bytes_sent, bytes_received)

    def upstream_retried(self, upstream: str) -> None:
        key = (UPSTREAM_RETRY, upstream, "")
        self.counters[key] = self.counters.get(key, 0) + 1


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
