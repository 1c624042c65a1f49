"""What a request must pass before it goes upstream, per listener and route: allow/deny, limit_conn,
limit_req and basic auth, in that order.

nginx runs limit_conn and limit_req (its preaccess phase) before allow/deny and auth_basic (its access
phase). Here allow/deny comes first: a denied client gets its 403 without touching a shared zone, so a
denied address cannot fill a zone's buckets or spend the rate of a key it shares. Auth comes last, as in
nginx, so that the limits bound how often a client can make the worker check a password (bcrypt costs
milliseconds). A listener or route without rules has no Guard at all: the request path pays one `is None`.
docs/architecture.md, "The edge".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ukproxy.edge.access import AccessList
from ukproxy.edge.basic_auth import BasicAuth
from ukproxy.edge.guard_config import GuardConfig, LimitZoneConfig
from ukproxy.edge.limits import REFUSED, ConnectionCount, RequestRate
from ukproxy.edge.shared_zone import open_zone
from ukproxy.metrics.tally import Tally

if TYPE_CHECKING:
    from ukproxy.config import Config, ListenConfig, RouteConfig
    from ukproxy.proxy.http_request import RequestHead

SITE_KEY = b"*"  # the one key of a zone keyed on "site"
# (rule, zone) → requests refused by it since the last metrics flush, in this worker; ("limit_req_delayed",
# zone) counts the delayed ones. metrics/flush.py moves them to ukproxy_edge_refused / ukproxy_limit_req_delayed.
OUTCOMES = Tally()


class Admission:
    """How a request got through its Guard: refused (`status`, with `headers` for the answer), or let in,
    perhaps after `delay` seconds, holding places in limit_conn zones until `release`."""

    __slots__ = ("delay", "headers", "held", "status")

    def __init__(self, status: int = 0, headers: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.delay = 0.0
        self.held: list[tuple[ConnectionCount, int]] | None = None

    def release(self) -> None:
        """The request is over (answered, failed, or its client gone): give back its limit_conn places."""
        held, self.held = self.held, None
        _give_back(held)


def _give_back(held: list[tuple[ConnectionCount, int]] | None) -> None:
    for count, at in held or ():
        count.release(at)


KeyOf = Callable[[bytes, "RequestHead"], "bytes | None"]  # (client address, head) → the zone's key, None: not limited


def _key_of(kind: str) -> KeyOf:
    """How a zone's key is read from a request."""
    if kind == "remote_addr":
        return lambda client_ip, head: client_ip
    if kind == "site":
        return lambda client_ip, head: SITE_KEY
    name = kind[len("header:"):].encode()
    return lambda client_ip, head: head.header(name) or None  # absent or empty: not limited, as in nginx


class Guard:
    def __init__(self, config: GuardConfig, zones: dict[str, LimitZoneConfig], workers: int = 1, slot: int = 0):
        self.access = AccessList(config.access) if config.access else None
        self.counts: list[tuple[ConnectionCount, KeyOf]] = []
        for c in config.limit_conn or ():
            zone = zones[c.zone]
            # Cells for the workers of two generations (a reload) and more (edge/limits.py).
            self.counts.append((ConnectionCount(open_zone("conn", zone.name, zone.size, 4 * workers), zone.name,
                                                c.conn, c.status), _key_of(zone.key)))
        self.rates: list[tuple[RequestRate, KeyOf]] = []
        for r in config.limit_req or ():
            zone = zones[r.zone]
            # One TAT cell per worker slot in each entry (edge/limits.py).
            self.rates.append((RequestRate(open_zone("req", zone.name, zone.size, workers), zone.name, zone.rate,
                                           r.burst, r.delay, r.status, slot), _key_of(zone.key)))
        auth = config.auth_basic
        self.auth = BasicAuth(auth, config.auth_basic_user_file) \
            if auth is not None and auth != "off" and config.auth_basic_user_file else None

    def admit(self, client_ip: bytes, head: RequestHead) -> Admission | None:
        """None: let in at once, holding nothing (the usual answer, with no object made for it)."""
        if self.access is not None and not self.access.allows(client_ip):
            return self._refuse("access", "", 403)
        held: list[tuple[ConnectionCount, int]] | None = None
        for count, key_of in self.counts:
            key = key_of(client_ip, head)
            if key is None:
                continue
            at = count.acquire(key)
            if at < 0:
                _give_back(held)
                return self._refuse("limit_conn", count.zone_name, count.status)
            if held is None:
                held = []
            held.append((count, at))
        delay = 0.0
        for rate, key_of in self.rates:
            key = key_of(client_ip, head)
            if key is None:
                continue
            wait = rate.check(key)
            if wait == REFUSED:
                _give_back(held)
                return self._refuse("limit_req", rate.zone_name, rate.status)
            if wait > 0.0:
                OUTCOMES.add(("limit_req_delayed", rate.zone_name))
                if wait > delay:
                    delay = wait
        if self.auth is not None and not self.auth.check(head.header(b"authorization"), time.monotonic()):
            _give_back(held)
            return self._refuse("auth_basic", "", 401, self.auth.challenge)
        if held is None and delay == 0.0:
            return None
        admission = Admission()
        admission.held = held
        admission.delay = delay
        return admission

    def _refuse(self, rule: str, zone: str, status: int, headers: bytes = b"") -> Admission:
        OUTCOMES.add((rule, zone))
        return Admission(status, headers)


class Guards:
    """One http listener's Guards: its own, and one per route whose rules differ from it."""

    def __init__(self, by_route: dict[int, Guard], listener: Guard | None):
        self.by_route = by_route  # id(RouteConfig) → its Guard
        self.listener = listener

    @staticmethod
    def from_config(config: Config, listen: ListenConfig, slot: int = 0) -> Guards | None:
        """None when neither the listener nor any route has a rule: nothing to do per request. `slot`: the
        worker's, whose cells it writes in limit_req zones."""
        zones = {z.name: z for z in (*config.limit_req_zones, *config.limit_conn_zones)}
        own: GuardConfig | None = listen.guard
        listener = Guard(own, zones, config.workers, slot) if own is not None and not own.empty else None
        by_route: dict[int, Guard] = {}
        routes: tuple[RouteConfig, ...] = config.routes
        for route in routes:
            if route.guard is None:
                if listener is not None:
                    by_route[id(route)] = listener
                continue
            rules = route.guard.over(own)
            if not rules.empty:
                by_route[id(route)] = Guard(rules, zones, config.workers, slot)
        if listener is None and not by_route:
            return None
        return Guards(by_route, listener)

    def admit(self, route: RouteConfig | None, client_ip: bytes, head: RequestHead) -> Admission | None:
        """The request's Admission, or None when it goes on at once holding nothing (or no rule applies)."""
        guard = self.listener if route is None else self.by_route.get(id(route))
        if guard is None:
            return None
        return guard.admit(client_ip, head)
