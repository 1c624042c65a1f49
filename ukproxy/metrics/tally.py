"""Plain per-worker tallies for the request path: dict and list arithmetic, no locks, no mmap.

A prometheus-client multiprocess `Counter.inc()` costs ~0.7 µs and `Histogram.observe()` ~1.5 µs
(mmap write under a lock, measured in the report); these cost ~0.1-0.3 µs. The flusher moves
them into the Prometheus values once a second.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Sequence


class HistogramTally:
    """Bucket counts and sums per label key, in Prometheus's `le` sense (value <= bound)."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)  # without +Inf; index len(bounds) is the +Inf bucket
        self.counts: dict[Hashable, list[int]] = {}
        self.sums: dict[Hashable, float] = {}

    def observe(self, key: Hashable, value: float) -> None:
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.bounds) + 1)
            self.sums[key] = 0.0
        counts[bisect_left(self.bounds, value)] += 1
        self.sums[key] += value

    def take(self) -> tuple[dict[Hashable, list[int]], dict[Hashable, float]]:
        """Everything observed since the last take, and start afresh."""
        counts, sums = self.counts, self.sums
        self.counts, self.sums = {}, {}
        return counts, sums


class Tally:
    """Counts per label key since the last take."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}

    def add(self, key: Hashable, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def take(self) -> dict[Hashable, int]:
        counts = self.counts
        self.counts = {}
        return counts


class RequestTally:
    """What one worker's requests and tcp sessions add up to between two flushes."""

    def __init__(self, latency_bounds: Sequence[float]):
        self.requests = Tally()  # (listener, upstream, status class) → count
        self.request_times = HistogramTally(latency_bounds)  # (listener, upstream)
        self.upstream_times = HistogramTally(latency_bounds)  # upstream
        self.tcp_sessions = Tally()  # (listener, upstream, status)
        self.tcp_sent = Tally()  # listener → bytes
        self.tcp_received = Tally()  # listener → bytes

    def request(self, listener: str, upstream: str | None, status: int, request_time: float,
                upstream_time: float | None) -> None:
        # Once per request: the Tally and HistogramTally steps written out, without their calls.
        counts = self.requests.counts
        key = (listener, upstream, status // 100)
        counts[key] = counts.get(key, 0) + 1
        times = self.request_times
        times_key = (listener, upstream)
        buckets = times.counts.get(times_key)
        if buckets is None:
            times.observe(times_key, request_time)
        else:
            buckets[bisect_left(times.bounds, request_time)] += 1
            times.sums[times_key] += request_time
        if upstream_time is not None:
            self.upstream_times.observe(upstream, upstream_time)

    def tcp_session(self, listener: str, upstream: str, status: int, bytes_sent: int, bytes_received: int) -> None:
        self.tcp_sessions.add((listener, upstream, status))
        self.tcp_sent.add(listener, bytes_sent)
        self.tcp_received.add(listener, bytes_received)
