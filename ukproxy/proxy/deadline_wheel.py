"""One loop timer for all of a worker's connection deadlines: a coarse timer wheel (docs/architecture.md).

A uvloop TimerHandle per connection (call_at, then cancel) costs about 3 µs, paid by every new
connection although almost none times out. Here a deadline goes into a bucket `RESOLUTION` seconds
wide (a set), and one loop timer is armed for the earliest bucket's end. Arming and disarming are a
set add and discard. When a bucket's time comes each connection in it is told
(`deadline_reached()`), and looks at its own clock: an early one arms again. A deadline fires up to
RESOLUTION late, never early (by the loop's clock).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Any, Final

log = logging.getLogger("ukproxy.deadlines")

RESOLUTION: Final = 0.05  # seconds: every timeout of ours is whole seconds or more
_PER_SECOND: Final = 20.0  # 1 / RESOLUTION


class DeadlineWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.buckets: dict[int, set[Any]] = {}  # bucket number → what is due by its end
        self.due: list[int] = []  # heap of the bucket numbers in `buckets`
        self.timer: asyncio.TimerHandle | None = None
        self.timer_bucket = 0
        self.firing = False  # in _fire, which arms the timer once at its end

    def add(self, item: Any, when: float) -> int:
        """`item.deadline_reached()` at or after `when` (loop time). Returns the bucket, for `remove`."""
        bucket = int(when * _PER_SECOND) + 1  # the bucket ends after `when`
        members = self.buckets.get(bucket)
        if members is None:
            members = self.buckets[bucket] = set()
            heapq.heappush(self.due, bucket)
            if not self.firing and (self.timer is None or bucket < self.timer_bucket):
                self._arm(bucket)
        members.add(item)
        return bucket

    def remove(self, item: Any, bucket: int) -> None:
        """Not due after all. An emptied bucket stays until its time: cheaper than moving the loop timer."""
        members = self.buckets.get(bucket)
        if members is not None:
            members.discard(item)

    def _arm(self, bucket: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_bucket = bucket
        # a millisecond past the bucket's end: the loop's clock is in ms, so its timer may run a little early
        self.timer = self.loop.call_at(bucket / _PER_SECOND + 0.001, self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = int(self.loop.time() * _PER_SECOND)  # buckets up to this one have ended
        due = self.due
        self.firing = True
        try:
            while due and due[0] <= now:
                members = self.buckets.pop(heapq.heappop(due))
                for item in members:
                    try:
                        item.deadline_reached()  # may add itself again, to a later bucket
                    except Exception:
                        log.exception("deadline of %r", item)
        finally:
            self.firing = False
            if due:
                self._arm(due[0])
