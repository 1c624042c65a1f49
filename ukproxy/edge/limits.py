"""nginx's limit_req (a leaky bucket per key) and limit_conn (requests in progress per key), on shared zones.

limit_req, as ngx_http_limit_req_module counts: each key's entry holds `excess` (requests above the rate
not yet drained) and `last` (when it was last accounted). A request drains `rate * elapsed` and adds
one; above `burst` it is refused and changes nothing; otherwise it is accounted and, unless within the
rule's `delay` (nodelay: all of the burst), waits (excess - delay) / rate seconds so that what goes
upstream keeps to the rate. A new key starts empty. Times are CLOCK_MONOTONIC, one clock for all workers.

limit_conn: each key's entry holds the requests of that key in progress in every worker; a request over
`conn` is refused, and the one admitted gives its place back when it ends (edge/guard.py `Admission`).
An entry in use is never given to another key; a bucket whose every entry is in use refuses (nginx
answers the same when its zone is full). docs/architecture.md, "The edge".
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Final

from ukproxy.edge.shared_zone import BUCKET, ENTRY, KEY_FIELD, SharedZone

log = logging.getLogger("ukproxy.edge")

_NUMBERS: Final = struct.Struct("=dd")  # limit_req: excess, last
_COUNT: Final = struct.Struct("=qd")  # limit_conn: in progress, last change
REFUSED: Final = -1.0


class RequestRate:
    """One limit_req rule on its zone."""

    def __init__(self, zone: SharedZone, zone_name: str, rate: float, burst: int, delay: float, status: int):
        self.zone = zone
        self.zone_name = zone_name
        self.rate = rate
        self.burst = float(burst)
        self.delay = delay
        self.status = status

    def check(self, key: bytes) -> float:
        """REFUSED, or how many seconds the request waits before it goes on (0.0: at once)."""
        zone = self.zone
        entry_key = zone.entry_key(key)
        bucket = zone.bucket(entry_key)
        now = time.monotonic()
        zone.lock(bucket)
        try:
            at = zone.find(entry_key, bucket)
            if at < 0:
                at = self._claim(bucket, entry_key)
                excess = 0.0
            else:
                excess, last = _NUMBERS.unpack_from(zone.map, at + KEY_FIELD)
                elapsed = now - last
                excess = excess - self.rate * elapsed + 1.0 if elapsed > 0 else excess + 1.0
                if excess < 0.0:
                    excess = 0.0
                elif excess > self.burst:
                    return REFUSED
            _NUMBERS.pack_into(zone.map, at + KEY_FIELD, excess, now)
        finally:
            zone.unlock(bucket)
        if excess <= self.delay:
            return 0.0
        return (excess - self.delay) / self.rate

    def _claim(self, bucket: int, entry_key: bytes) -> int:
        """An entry for a key not in its bucket: an unused one, else the one accounted longest ago."""
        zone = self.zone
        at = zone.empty_or(bucket)
        if at < 0:
            at = min(range(bucket, bucket + BUCKET, ENTRY),
                     key=lambda a: _NUMBERS.unpack_from(zone.map, a + KEY_FIELD)[1])
        zone.take(at, entry_key)
        return at


class ConnectionCount:
    """One limit_conn rule on its zone."""

    def __init__(self, zone: SharedZone, zone_name: str, conn: int, status: int):
        self.zone = zone
        self.zone_name = zone_name
        self.conn = conn
        self.status = status

    def acquire(self, key: bytes) -> int:
        """The entry holding the request's place (give it back with `release`), or -1 when refused."""
        zone = self.zone
        entry_key = zone.entry_key(key)
        bucket = zone.bucket(entry_key)
        zone.lock(bucket)
        try:
            at = zone.find(entry_key, bucket)
            if at < 0:
                at = self._claim(bucket, entry_key)
                if at < 0:
                    log.warning("limit_conn zone %s: every entry of a bucket is in use; refusing", self.zone_name)
                    return -1
                count = 0
            else:
                count = _COUNT.unpack_from(zone.map, at + KEY_FIELD)[0]
                if count >= self.conn:
                    return -1
            _COUNT.pack_into(zone.map, at + KEY_FIELD, count + 1, time.monotonic())
            return at
        finally:
            zone.unlock(bucket)

    def release(self, at: int) -> None:
        zone = self.zone
        bucket = at - at % BUCKET
        zone.lock(bucket)
        try:
            count = _COUNT.unpack_from(zone.map, at + KEY_FIELD)[0]
            _COUNT.pack_into(zone.map, at + KEY_FIELD, max(count - 1, 0), time.monotonic())
        finally:
            zone.unlock(bucket)

    def _claim(self, bucket: int, entry_key: bytes) -> int:
        """An unused entry, else the idle one (no request in progress) that changed longest ago; -1 if none."""
        zone = self.zone
        at = zone.empty_or(bucket)
        if at < 0:
            idle = [a for a in range(bucket, bucket + BUCKET, ENTRY)
                    if _COUNT.unpack_from(zone.map, a + KEY_FIELD)[0] <= 0]
            if not idle:
                return -1
            at = min(idle, key=lambda a: _COUNT.unpack_from(zone.map, a + KEY_FIELD)[1])
        zone.take(at, entry_key)
        return at
