"""One upstream server: its configured address and limits, and its live state in this worker.

Live state is per worker process (docs/architecture.md, rule 1: share nothing on the request path):
nothing here is shared or locked.
Times are seconds on one monotonic clock (``time.monotonic()``); callers pass ``now`` so
tests can inject it.

Passive health follows nginx's ngx_http_upstream_round_robin.c:

* ``record_failure(now)`` counts a failure and stamps ``failed_at`` and ``checked_at``.
  Failures older than ``fail_timeout`` start a new count, so ``max_fails`` means
  "that many failures within ``fail_timeout``" as nginx documents it; once the server is
  disabled only a success clears the count.
* With ``fails >= max_fails`` the server is unavailable until ``fail_timeout`` has passed
  since ``checked_at``. Then a balancer may pick it once: the pick (``selected(now)``) moves
  ``checked_at`` to now, which makes it unavailable again for another ``fail_timeout``
  unless the trial request succeeds.
* ``record_success()`` clears the failures only if the server was picked after its last
  failure (``failed_at < checked_at``), i.e. a success of the trial request, not of a request
  that was already in flight when the server failed.
* Each failure also lowers ``effective_weight`` by ``weight // max_fails``; the smooth
  weighted round robin raises it back by one per pick it takes part in.

``max_fails = 0`` turns passive health off for the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_EWMA_ALPHA = 0.3


class Attached(Protocol):
    """A connection to a server, or a connect under way: what `Server.cut_off` ends."""

    def cut_off(self) -> None: ...


@dataclass(eq=False)  # identity equality and hash: servers are used in sets and dict keys
class Server:
    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    max_conns: int = 0  # 0 = unlimited
    backup: bool = False
    down: bool = False
    name: str = ""  # for logs and metrics; "host:port" when empty
    ewma_alpha: float = DEFAULT_EWMA_ALPHA  # weight of the newest response time in ewma_response_time

    # Live state of this worker, set by __post_init__ (mypyc, which compiles this class, does not
    # initialise defaults of init=False fields).
    active: int = field(init=False)
    fails: int = field(init=False)
    failed_at: float = field(init=False)
    checked_at: float = field(init=False)
    health_ok: bool = field(init=False)  # set by active health checks
    ewma_response_time: float | None = field(init=False)
    requests: int = field(init=False)
    effective_weight: int = field(init=False)
    attached: set[Attached] = field(init=False, repr=False)  # this worker's connections and connects to it
    gone: bool = field(init=False)  # cut off: never connect to it again

    def __post_init__(self) -> None:
        self.attached = set()
        self.gone = False
        self.active = 0
        self.fails = 0
        self.failed_at = -math.inf
        self.checked_at = -math.inf
        self.health_ok = True
        self.ewma_response_time = None
        self.requests = 0
        if not self.name:
            self.name = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if not 0 < self.port < 65536:
            raise ValueError(f"server {self.name}: port must be 1..65535, got {self.port}")
        if self.weight < 1:
            raise ValueError(f"server {self.name}: weight must be >= 1, got {self.weight}")
        if self.max_fails < 0:
            raise ValueError(f"server {self.name}: max_fails must be >= 0, got {self.max_fails}")
        if self.fail_timeout < 0:
            raise ValueError(f"server {self.name}: fail_timeout must be >= 0, got {self.fail_timeout}")
        if self.max_conns < 0:
            raise ValueError(f"server {self.name}: max_conns must be >= 0, got {self.max_conns}")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"server {self.name}: ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        self.effective_weight = self.weight

    def failed(self, now: float) -> bool:
        """True while passive health keeps the server out: max_fails reached within fail_timeout."""
        return (
            self.max_fails > 0
            and self.fails >= self.max_fails
            and now - self.checked_at <= self.fail_timeout
        )

    def at_max_conns(self) -> bool:
        return self.max_conns > 0 and self.active >= self.max_conns

    def available(self, now: float) -> bool:
        return not self.down and self.health_ok and not self.at_max_conns() and not self.failed(now)

    def selected(self, now: float) -> None:
        """Called by a balancer when it picks this server: opens nginx's one-trial window."""
        if now - self.checked_at > self.fail_timeout:
            self.checked_at = now

    def cut_off(self) -> int:
        """The server is gone (its VM died): end every connection and connect to it now, rather than
        let each wait for a timeout. Their users see a failed connection and may retry elsewhere."""
        self.gone = True
        attached = list(self.attached)
        self.attached.clear()
        for thing in attached:
            thing.cut_off()
        return len(attached)

    def attach(self, thing: Attached) -> None:
        """A connection to this server opened, or a connect to it began: `cut_off` ends it."""
        self.attached.add(thing)

    def detach(self, thing: Attached) -> None:
        self.attached.discard(thing)

    def connection_started(self) -> None:
        self.active += 1
        self.requests += 1

    def connection_finished(self) -> None:
        # Clamped so an unbalanced caller cannot make the server look less loaded than idle.
        self.active = max(0, self.active - 1)

    def record_failure(self, now: float) -> None:
        if self.fails < self.max_fails and now - self.failed_at > self.fail_timeout:
            self.fails = 0  # the earlier failures are outside the window; a disabled server stays counted
        self.fails += 1
        self.failed_at = now
        self.checked_at = now
        if self.max_fails:
            self.effective_weight = max(0, self.effective_weight - self.weight // self.max_fails)

    def record_success(self, response_time: float | None = None) -> None:
        if self.failed_at < self.checked_at:
            self.fails = 0
        if response_time is not None:
            if self.ewma_response_time is None:
                self.ewma_response_time = response_time
            else:
                a = self.ewma_alpha
                self.ewma_response_time = a * response_time + (1 - a) * self.ewma_response_time
