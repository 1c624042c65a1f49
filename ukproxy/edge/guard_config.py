"""The config of what a request must pass before it goes upstream: rate and connection limits, allow/deny
and basic auth (nginx's limit_req, limit_conn, allow/deny, auth_basic), read into frozen objects.

Zones are top-level tables (`[[limit_req_zone]]`, `[[limit_conn_zone]]`); the rules that use them sit on
a `[[listen]]` (every request of the listener) or a `[[route]]` (its requests only). A rule kind set on a
route replaces the listener's for that route, as an nginx location's directives replace the server's;
`limit_req = []`, `access = []` or `auth_basic = "off"` on a route turns the listener's off there.
Every problem is reported with file, key path and reason (`ukproxy check`). docs/architecture.md, "The edge".
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ukproxy.config_reader import HEADER_NAME, Invalid, Issues, Table, boolean, integer, size, string, type_name

_ZONE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*r/(s|m)\s*$")
KEY_KINDS = ("remote_addr", "site")  # besides "header:NAME"
MIN_ZONE_SIZE = 32 * 1024
MAX_ZONE_SIZE = 1024 * 1024 * 1024


@dataclass(frozen=True)
class LimitZoneConfig:
    """One shared zone: what it keys on and how big its table is (and for limit_req, the rate)."""

    name: str
    kind: str  # "req" or "conn"
    key: str  # "remote_addr", "site" (one key for everything) or "header:<lower-case name>"
    size: int  # bytes of shared memory
    rate: float = 0.0  # requests per second (limit_req zones)


@dataclass(frozen=True)
class LimitReqRule:
    zone: str
    burst: int = 0
    delay: float = 0.0  # excess requests forwarded at once before the rest are smoothed; inf = nodelay
    status: int = 429


@dataclass(frozen=True)
class LimitConnRule:
    zone: str
    conn: int
    status: int = 429


@dataclass(frozen=True)
class AccessRule:
    allow: bool
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # None: all


@dataclass(frozen=True)
class GuardConfig:
    """The rules of one listener or route; None for a kind it does not set (a route then takes the listener's)."""

    limit_req: tuple[LimitReqRule, ...] | None = None
    limit_conn: tuple[LimitConnRule, ...] | None = None
    access: tuple[AccessRule, ...] | None = None
    auth_basic: str | None = None  # the realm; "off" turns a listener's auth off on a route
    auth_basic_user_file: str | None = None  # absolute once loaded

    def over(self, outer: GuardConfig | None) -> GuardConfig:
        """These rules on top of `outer`'s (a route's over its listener's): a kind set here wins."""
        if outer is None:
            return self
        auth_set = self.auth_basic is not None
        return GuardConfig(
            limit_req=self.limit_req if self.limit_req is not None else outer.limit_req,
            limit_conn=self.limit_conn if self.limit_conn is not None else outer.limit_conn,
            access=self.access if self.access is not None else outer.access,
            auth_basic=self.auth_basic if auth_set else outer.auth_basic,
            auth_basic_user_file=self.auth_basic_user_file if auth_set else outer.auth_basic_user_file,
        )

    @property
    def empty(self) -> bool:
        return not (self.limit_req or self.limit_conn or self.access
                    or (self.auth_basic is not None and self.auth_basic != "off"))


GUARD_KEYS = ("limit_req", "limit_conn", "access", "auth_basic", "auth_basic_user_file")


def read_guard(t: Table) -> GuardConfig | None:
    """The guard keys of a [[listen]] or [[route]] table (None when it has none)."""
    if not any(t.has(k) for k in GUARD_KEYS):
        t.seen.update(GUARD_KEYS)
        return None
    guard = GuardConfig(
        limit_req=_rules(t, "limit_req", _read_limit_req) if t.has("limit_req") else None,
        limit_conn=_rules(t, "limit_conn", _read_limit_conn) if t.has("limit_conn") else None,
        access=t.get("access", _access_list, None),
        auth_basic=t.get("auth_basic", _realm, None),
        auth_basic_user_file=t.get("auth_basic_user_file", _readable_file, None),
    )
    if guard.auth_basic is not None and guard.auth_basic != "off" and guard.auth_basic_user_file is None:
        if not t.has("auth_basic_user_file"):
            t.issues.add(t.key("auth_basic_user_file"), "auth_basic needs an htpasswd file")
    elif guard.auth_basic_user_file is not None and guard.auth_basic is None:
        t.issues.add(t.key("auth_basic"), "auth_basic_user_file is set but auth_basic (the realm) is not")
    if guard.auth_basic_user_file is not None and guard.auth_basic not in (None, "off"):
        from ukproxy.edge.basic_auth import HtpasswdError, read_htpasswd

        try:
            read_htpasswd(guard.auth_basic_user_file)
        except HtpasswdError as e:
            t.issues.add(t.key("auth_basic_user_file"), str(e))
    return guard


def _rules(t: Table, name: str, read: Any) -> tuple[Any, ...]:
    """An array of inline tables, or a single table, each read by `read`."""
    t.seen.add(name)
    value = t.data[name]
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        path = f"{t.key(name)}[{i}]" if isinstance(value, list) else t.key(name)
        if not isinstance(item, dict):
            t.issues.add(path, f"expected a table such as {{zone = \"perip\"}}, got {type_name(item)}")
            continue
        rule = Table(item, path, t.issues)
        out.append(read(rule))
        rule.done()
    return tuple(out)


def _status(value: Any) -> int:
    status = integer(400, 599)(value)
    if status in (401, 407):
        raise Invalid(f"{status} would ask the client for credentials; use 429, 503 or another 4xx/5xx")
    return status


def _read_limit_req(t: Table) -> LimitReqRule:
    nodelay = t.get("nodelay", boolean, False)
    delay = t.get("delay", integer(0), None)
    if nodelay and delay is not None:
        t.issues.add(t.key("delay"), "nodelay and delay cannot both be set (nodelay is delay = burst)")
    burst = t.get("burst", integer(0, 1_000_000), 0)
    return LimitReqRule(
        zone=t.get("zone", string, ""),
        burst=burst,
        delay=math.inf if nodelay else float(delay or 0),
        status=t.get("status", _status, 429),
    )


def _read_limit_conn(t: Table) -> LimitConnRule:
    return LimitConnRule(
        zone=t.get("zone", string, ""),
        conn=t.get("conn", integer(1, 1_000_000), 1),
        status=t.get("status", _status, 429),
    )


def _access_list(value: Any) -> tuple[AccessRule, ...]:
    """["allow 10.0.0.0/8", "deny 2001:db8::/32", "deny all"]: tried in order, the first match wins."""
    if not isinstance(value, list):
        raise Invalid(f'expected an array such as ["allow 127.0.0.1", "deny all"], got {type_name(value)}')
    rules = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(f"item {i}: expected a string such as \"deny 10.0.0.0/8\", got {type_name(item)}")
        verb, _, target = item.strip().partition(" ")
        target = target.strip()
        if verb not in ("allow", "deny") or not target:
            raise Invalid(f"item {i}: expected \"allow CIDR\", \"deny CIDR\" or \"allow|deny all\", got {item!r}")
        if target == "all":
            rules.append(AccessRule(verb == "allow", None))
            continue
        try:
            net = ipaddress.ip_network(target, strict=True)
        except ValueError as e:
            raise Invalid(f"item {i}: {target!r} is not an IPv4 or IPv6 address or network ({e})") from None
        rules.append(AccessRule(verb == "allow", net))
    return tuple(rules)


def _realm(value: Any) -> str:
    realm = string(value)
    if not realm or any(c in realm for c in '"\\\r\n') or not realm.isprintable():
        raise Invalid(f"a realm is printable text without quotes or backslashes, or \"off\"; got {value!r}")
    return realm


def _readable_file(value: Any) -> str:
    text = string(value)
    path = os.path.abspath(text)
    if not os.path.isfile(path):
        raise Invalid(f"no file {path}")
    if not os.access(path, os.R_OK):
        raise Invalid(f"{path} is not readable")
    return path


# zones


def read_zone(t: Table, kind: str) -> LimitZoneConfig:
    zone = LimitZoneConfig(
        name=t.get("name", _zone_name, ""),
        kind=kind,
        key=t.get("key", _zone_key, "remote_addr"),
        size=t.get("size", _zone_size, 1024 * 1024),
        rate=t.get("rate", _rate, 0.0) if kind == "req" else 0.0,
    )
    if kind == "req" and not t.has("rate"):
        t.issues.add(t.key("rate"), 'required key is missing (e.g. "10r/s" or "600r/m")')
    t.done()
    return zone


def _zone_name(value: Any) -> str:
    name = string(value)
    if not _ZONE_NAME.fullmatch(name):
        raise Invalid(f"1-63 letters, digits, '_', '.' or '-', got {value!r}")
    return name


def _zone_key(value: Any) -> str:
    key = string(value)
    if key in KEY_KINDS:
        return key
    if key.startswith("header:"):
        name = key[7:].strip()
        if HEADER_NAME.fullmatch(name):
            return "header:" + name.lower()
    raise Invalid(f'expected "remote_addr", "site" or "header:NAME", got {value!r}')


def _zone_size(value: Any) -> int:
    n = size(value)
    if not MIN_ZONE_SIZE <= n <= MAX_ZONE_SIZE:
        raise Invalid(f"must be between 32k and 1g, got {value!r}")
    return n


def _rate(value: Any) -> float:
    """nginx's "10r/s" or "30r/m"."""
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is None:
        raise Invalid(f'expected a rate such as "10r/s" or "30r/m", got {value!r}')
    per_second = float(m.group(1)) / (60.0 if m.group(2) == "m" else 1.0)
    if per_second <= 0 or per_second > 10_000_000:
        raise Invalid(f"must be above 0 and at most 10000000r/s, got {value!r}")
    return per_second


def check_guards(zones: tuple[LimitZoneConfig, ...], guards: list[tuple[str, GuardConfig | None]],
                 issues: Issues) -> None:
    """Zone names are unique and every rule names a zone of its kind; `guards`: (key path, rules)."""
    by_name: dict[str, LimitZoneConfig] = {}
    index = {"req": -1, "conn": -1}  # each zone's place among its own kind's tables
    for zone in zones:
        index[zone.kind] += 1
        i = index[zone.kind]
        table = f"limit_{zone.kind}_zone"
        if zone.name in by_name:
            other = by_name[zone.name]
            issues.add(f"{table}[{i}].name", f"duplicate zone name {zone.name!r} (also a limit_{other.kind}_zone)")
        by_name.setdefault(zone.name, zone)
    for path, guard in guards:
        if guard is None:
            continue
        named: tuple[tuple[str, list[str]], ...] = (("req", [r.zone for r in guard.limit_req or ()]),
                                                    ("conn", [c.zone for c in guard.limit_conn or ()]))
        for kind, zones_used in named:
            for j, zone_name in enumerate(zones_used):
                key = f"{path}.limit_{kind}[{j}].zone"
                found = by_name.get(zone_name)
                if found is None:
                    issues.add(key, f"no limit_{kind}_zone named {zone_name!r}")
                elif found.kind != kind:
                    issues.add(key, f"{zone_name!r} is a limit_{found.kind}_zone, not a limit_{kind}_zone")
            for name in {z for z in zones_used if zones_used.count(z) > 1}:
                issues.add(f"{path}.limit_{kind}", f"zone {name!r} is used twice")
        for j, rule in enumerate(guard.limit_req or ()):
            if rule.delay != math.inf and rule.delay > rule.burst:
                issues.add(f"{path}.limit_req[{j}].delay", f"delay ({int(rule.delay)}) is larger than burst "
                           f"({rule.burst}): requests past the burst are refused, never delayed")
