"""Moves one worker's plain counters and tallies into the Prometheus values, once a second and at stop.

The request path only touches ints and dicts (see `tally`); here the deltas since the last
flush become `inc()`s on the multiprocess values and the live gauges are set, so a scrape is
at most a second behind. Histogram deltas are added bucket by bucket: prometheus-client's
multiprocess histogram stores per-bucket (non-cumulative) counts and a sum, which `observe()`
would update one observation at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from ukproxy.edge.guard import OUTCOMES as EDGE_OUTCOMES
from ukproxy.metrics import families as f
from ukproxy.protocol import EVENT_NAMES, CounterKey, Event

if TYPE_CHECKING:
    from ukproxy.accept_cycle import AcceptCycle
    from ukproxy.metrics.tally import HistogramTally
    from ukproxy.upstream.group import UpstreamGroup
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.metrics")

FLUSH_INTERVAL = 1.0
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _status_class(klass: int) -> str:
    return STATUS_CLASSES.get(klass, "other")


def add_histogram(histogram: Any, tally: HistogramTally, labels: Any) -> None:
    """Add a tally's buckets and sums to a labelled prometheus Histogram (bucket order matches)."""
    counts, sums = tally.take()
    for key, buckets in counts.items():
        child = histogram.labels(*labels(key))
        for bucket, n in zip(child._buckets, buckets, strict=True):
            if n:
                bucket.inc(n)
        child._sum.inc(sums[key])


class WorkerMetricsFlusher:
    def __init__(self, state: WorkerState, cycle: AcceptCycle, worker: int,
                 groups: dict[str, UpstreamGroup] | None = None):
        self.state = state
        self.cycle = cycle
        self.groups = groups or {}
        self.servers_shown: set[tuple[str, str]] = set()  # (upstream, server) with an active gauge of ours
        self.worker = str(worker)
        self.loop = state.loop
        self.flushed: dict[Hashable, int] = {}  # running totals as of the last flush
        self.timer: asyncio.TimerHandle | None = None
        # The per-worker children, bound once.
        self.acquisitions = f.ACCEPT_MUTEX_ACQUISITIONS.labels(self.worker)
        self.skips = f.ACCEPT_DISABLED_SKIPS.labels(self.worker)
        self.connections = f.WORKER_CONNECTIONS.labels(self.worker)
        self.accepted = f.WORKER_ACCEPTED.labels(self.worker)
        self.by_state = {s: f.CONNECTIONS_ACTIVE.labels(s) for s in ("reading", "writing", "waiting")}

    def start(self) -> None:
        self.flush()  # the live gauges exist (at zero) from the start
        self.timer = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flush()

    def _tick(self) -> None:
        try:
            self.flush()
        except Exception:  # metrics must never take a worker down
            log.exception("metrics flush failed")
        self.timer = self.loop.call_later(FLUSH_INTERVAL, self._tick)

    def _delta(self, key: Hashable, total: int) -> int:
        delta = total - self.flushed.get(key, 0)
        self.flushed[key] = total
        return delta

    def flush(self) -> None:
        state = self.state
        f.CONNECTIONS_ACCEPTED.inc(self._delta("accepted", state.accepted))
        f.CONNECTIONS_HANDLED.inc(self._delta("handled", state.handled))
        self.acquisitions.inc(self._delta("acquisitions", self.cycle.acquisitions))
        self.skips.inc(self._delta("skips", self.cycle.disabled.skips))
        self._flush_counters()
        self._flush_tallies()
        reading, writing = state.reading, state.writing
        self.by_state["reading"].set(reading)
        self.by_state["writing"].set(writing)
        self.by_state["waiting"].set(max(state.clients - reading - writing, 0))
        self.connections.set(state.clients)
        self.accepted.set(state.accepted)
        self._flush_servers()

    def _flush_servers(self) -> None:
        """Per upstream server (a VM's id for pools): in flight now, and sent since the last flush."""
        shown = set()
        for name, group in self.groups.items():
            for server in group.servers:
                key = (name, server.name)
                shown.add(key)
                f.SERVER_ACTIVE.labels(*key).set(server.active)
                sent = self._delta(("server", *key), server.requests)
                if sent:
                    f.SERVER_REQUESTS.labels(*key).inc(sent)
        for key in self.servers_shown - shown:  # gone (a VM died or retired): nothing in flight from us
            f.SERVER_ACTIVE.labels(*key).set(0)
        self.servers_shown = shown

    def _flush_counters(self) -> None:
        """WorkerState.counters: (Event, label, label) keys, running totals."""
        for key, total in list(self.state.counters.items()):
            delta = self._delta(("counter", key), total)
            if delta:
                self._count_event(key, delta)

    @staticmethod
    def _count_event(key: CounterKey, n: int) -> None:
        event, label, detail = key
        if event is Event.UPSTREAM_FAILED:
            f.UPSTREAM_FAILURES.labels(label, detail).inc(n)
        elif event is Event.UPSTREAM_RETRY:
            f.UPSTREAM_RETRIES.labels(label).inc(n)
        elif event is Event.NO_UPSTREAM:
            f.UPSTREAM_UNAVAILABLE.labels(label).inc(n)
        elif event is Event.TIMEOUT:
            f.TIMEOUTS.labels(label).inc(n)
        elif event is Event.ACCEPT_ERROR:
            f.ACCEPT_ERRORS.inc(n)
        elif event is Event.HTTP2_STREAMS:
            f.HTTP2_STREAMS.inc(n)
        elif event is Event.HTTP2_RESETS:
            f.HTTP2_RESETS.labels(label).inc(n)
        elif event is Event.HTTP2_GOAWAYS:
            f.HTTP2_GOAWAYS.labels(label).inc(n)
        elif event is Event.TLS_HANDSHAKE:
            f.TLS_HANDSHAKES.labels(label, detail).inc(n)
        elif event is Event.TLS_RESUMPTION:
            f.TLS_RESUMPTIONS.labels(label).inc(n)
        elif event is Event.TLS_HANDSHAKE_FAILED:
            f.TLS_HANDSHAKE_FAILURES.labels(label, detail).inc(n)
        elif event is Event.REQUESTS_BY_PROTOCOL:
            f.REQUESTS_BY_PROTOCOL.labels(label, detail).inc(n)
        else:  # the rest share one family, by name ("http_errors:bad_gateway", "accept_over_limit")
            name = EVENT_NAMES[event]
            f.WORKER_EVENTS.labels(f"{name}:{label}" if label else name).inc(n)

    def _flush_tallies(self) -> None:
        tally = self.state.tally
        tally.fold()  # the requests' slots into the keyed tallies taken below
        # upstream is None for requests answered without one (400s, 404 without a route): an empty label.
        for (listener, upstream, klass), n in tally.requests.take().items():
            f.REQUESTS.labels(listener, upstream or "", _status_class(klass)).inc(n)
        add_histogram(f.REQUEST_DURATION, tally.request_times, lambda key: (key[0], key[1] or ""))
        add_histogram(f.UPSTREAM_RESPONSE_TIME, tally.upstream_times, lambda key: (key or "",))
        for (listener, upstream, status), n in tally.tcp_sessions.take().items():
            f.TCP_SESSIONS.labels(listener, upstream, str(status)).inc(n)
        for listener, n in tally.tcp_sent.take().items():
            f.TCP_SENT_BYTES.labels(listener).inc(n)
        for listener, n in tally.tcp_received.take().items():
            f.TCP_RECEIVED_BYTES.labels(listener).inc(n)
        for (rule, zone), n in EDGE_OUTCOMES.take().items():  # type: ignore[misc]
            if rule == "limit_req_delayed":
                f.LIMIT_REQ_DELAYED.labels(zone).inc(n)
            else:
                f.EDGE_REFUSED.labels(rule, zone).inc(n)
