"""nginx's limit_req (a leaky bucket per key) and limit_conn (requests in progress per key), on shared zones.

limit_req keeps nginx's arithmetic (ngx_http_limit_req_module): a request finds `excess` requests of its
key still queued ahead of it (those not yet drained at `rate`); with more than `burst` ahead it is refused
and changes nothing; otherwise it joins the queue and, unless within the rule's `delay` (nodelay: the
whole burst), waits excess / rate (less the allowance) so that what goes upstream keeps to the rate. The
queue is held as one time, the theoretical arrival time (TAT) of the next request at the rate (GCRA, the
same bucket counted by when it empties): excess = (TAT - now) * rate. Times are CLOCK_MONOTONIC, one
clock for every worker.

Shared without a lock on the way: each entry has one TAT cell per worker slot, and a worker writes only its
own. The key's TAT is the latest of the cells. Two workers that admit the same key at the same moment take
the same place; each looks at the cells again after writing its own, and one that finds another's place
less than an interval from its own gives its place back and looks again (`_taken_twice`). What is left is
the moment between a write and the other's look (the CPU's store buffer): bench/edge_zones.py measures
how far two processes checking one key flat out still run over. Nobody ever waits for another worker. A
lock taken per request (fcntl, measured in docs/architecture.md) cost two system calls, and on a busy
machine a worker preempted while holding the lock of a hot key (one client, or key = "site") stalled the
other: half the throughput in bench/edge.py.
The bucket lock is taken only to give a new key an entry: an unused one, or the one whose queue emptied
longest ago.

limit_conn, the same way: each key's entry holds a count of requests in progress per cell, and each worker
counts in a cell it owns for its life (`SharedZone.own_cell`: an fcntl lock the kernel drops when the
worker dies, and the next worker to start zeroes what the dead one held). A request is refused when the
sum reaches `conn`; the one admitted gives its place back when it ends (edge/guard.py `Admission`). Two
workers admitting one key at the same instant may both pass. An entry in use is never given to another
key; a bucket whose every entry is in use refuses (nginx answers the same when its zone is full).
docs/architecture.md, "The edge".
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
import time
from typing import Final

from ukproxy.edge.shared_zone import KEY_FIELD, SharedZone

log = logging.getLogger("ukproxy.edge")

_TAT: Final = struct.Struct("=d")
_ONE: Final = struct.Struct("=q")  # limit_conn: one cell's requests in progress
REFUSED: Final = -1.0
_EPSILON: Final = 1e-9  # seconds: requests at the same instant sit exactly `burst` places deep
_TRIES: Final = 3  # looks at the queue when other workers keep taking the same place at the same moment


class RequestRate:
    """One limit_req rule on its zone, as worker `slot` applies it."""

    def __init__(self, zone: SharedZone, zone_name: str, rate: float, burst: int, delay: float, status: int,
                 slot: int = 0):
        self.zone = zone
        self.zone_name = zone_name
        self.interval = 1.0 / rate
        self.tolerance = burst * self.interval + _EPSILON
        self.allowance = delay * self.interval if delay != math.inf else math.inf
        self.status = status
        self.index = slot % zone.cells
        self.cell = KEY_FIELD + 8 * self.index
        self.cells = struct.Struct(f"={zone.cells}d")

    def check(self, key: bytes) -> float:
        """REFUSED, or how many seconds the request waits before it goes on (0.0: at once)."""
        at = self.zone.locate(key, self._longest_empty)
        m = self.zone.map
        cells_at = at + KEY_FIELD
        mine = at + self.cell
        for _ in range(_TRIES):
            cells = self.cells.unpack_from(m, cells_at)
            tat: float = max(cells)
            # The clock after the cells: what another worker wrote was timed before we read it, so never ahead
            # of us. (Read first, a worker preempted between the two saw the others' later TATs against its
            # old clock and refused for a queue that was not there: bench/edge.py's 1 ms tolerance found it.)
            now = time.monotonic()
            ahead = tat - now  # seconds of queue before this request's turn: excess / rate
            if ahead <= 0.0:
                ahead, tat = 0.0, now
            elif ahead > self.tolerance:
                return REFUSED
            place = tat + self.interval
            _TAT.pack_into(m, mine, place)
            if not self._taken_twice(m, cells_at, place):
                if ahead <= self.allowance:
                    return 0.0
                return ahead - self.allowance
            _TAT.pack_into(m, mine, cells[self.index])  # give it back, and look again
        return REFUSED

    def _taken_twice(self, m: mmap.mmap, cells_at: int, place: float) -> bool:
        """Whether another worker took the same place in the queue at the same moment: its cell is less than an
        interval from ours (places taken one after another are a whole interval apart). Whoever sees that backs
        off and looks again, so the place goes once; if both see it, both look again, and nothing is lost."""
        near = self.interval * 0.999
        for i, other in enumerate(self.cells.unpack_from(m, cells_at)):
            if i != self.index and abs(other - place) < near:
                return True
        return False

    def _longest_empty(self, entries: range) -> int:
        """The entry to give a new key when none is unused: the one whose queue emptied longest ago."""
        m = self.zone.map
        return min(entries, key=lambda a: max(self.cells.unpack_from(m, a + KEY_FIELD)))


class ConnectionCount:
    """One limit_conn rule on its zone. Each entry holds a count per cell; this worker counts in the cell it
    owns (`SharedZone.own_cell`) and the key's requests in progress are the sum."""

    def __init__(self, zone: SharedZone, zone_name: str, conn: int, status: int):
        self.zone = zone
        self.zone_name = zone_name
        self.conn = conn
        self.status = status
        self.counts = struct.Struct(f"={zone.cells}q")
        self.cell = KEY_FIELD + 8 * _owned_cell(zone, zone_name)
        self.warned_at = -60.0

    def acquire(self, key: bytes) -> int:
        """The entry holding the request's place (give it back with `release`), or -1 when refused."""
        zone = self.zone
        at = zone.locate(key, self._idle)
        if at < 0:
            now = time.monotonic()
            if now - self.warned_at >= 60.0:  # said once a minute, not once per refused request
                self.warned_at = now
                log.warning("limit_conn zone %s: every entry of a bucket is in use; refusing (a bigger "
                            "size holds more keys)", self.zone_name)
            return -1
        m = zone.map
        if sum(self.counts.unpack_from(m, at + KEY_FIELD)) >= self.conn:
            return -1
        mine = at + self.cell
        _ONE.pack_into(m, mine, _ONE.unpack_from(m, mine)[0] + 1)
        return at

    def release(self, at: int) -> None:
        m = self.zone.map
        mine = at + self.cell
        _ONE.pack_into(m, mine, max(_ONE.unpack_from(m, mine)[0] - 1, 0))

    def _idle(self, entries: range) -> int:
        """The entry to give a new key when none is unused: one with no request in progress; -1 if none."""
        m = self.zone.map
        return next((a for a in entries if sum(self.counts.unpack_from(m, a + KEY_FIELD)) <= 0), -1)


_owned: dict[int, int] = {}


def _owned_cell(zone: SharedZone, zone_name: str) -> int:
    """This process's cell in a limit_conn zone, claimed once however many rules use the zone."""
    cell = _owned.get(id(zone))
    if cell is None:
        cell = zone.own_cell()
        if cell < 0:  # more live workers than cells: share one, and counts may drift by a request or two
            log.error("limit_conn zone %s: every one of its %d cells is owned by a live worker; sharing cell 0",
                      zone_name, zone.cells)
            cell = 0
        _owned[id(zone)] = cell
    return cell
