"""The config keys of header, return and rewrite rules, request ids and real client addresses.

Read here and wired into ukproxy/config.py with one call per table: `[[route]]`'s request_headers,
response_headers, rewrite and return; `[real_ip]`; `[request_id]`; `[[listen]] proxy_protocol`;
`[[upstream]] proxy_protocol`. Every problem is recorded with its key path (conf/README.md).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ukproxy.config_reader import Invalid, Table, boolean, duration, header_name, integer, list_of, one_of, string
from ukproxy.edge.variables import Template, compile_template

if TYPE_CHECKING:
    from ukproxy.config import Config

# Framing and hop-by-hop fields (RFC 9110 7.6.1) belong to the proxy: no rule may touch them.
_FRAMING = frozenset(("connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
                      "proxy-connection"))
REDIRECTS = (301, 302, 303, 307, 308)
FLAGS = ("break", "last", "redirect", "permanent")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HeaderRulesConfig:
    """One direction's rules, applied in this order: remove, set (replaces), add (appends)."""

    remove: tuple[str, ...] = ()  # lower-cased names
    set: tuple[tuple[str, Template], ...] = ()
    add: tuple[tuple[str, Template], ...] = ()
    always: bool = False  # response rules: set and add on every status (nginx's add_header ... always)


@dataclass(frozen=True)
class ReturnConfig:
    """nginx's `return`: a fixed status with a body, or a redirect to `location`."""

    status: int
    location: Template | None = None
    body: Template | None = None
    content_type: str = "text/plain"


@dataclass(frozen=True)
class RewriteConfig:
    """nginx's `rewrite`: a regex (or a path prefix) over the path, its replacement, and what follows."""

    replacement: Template
    pattern: re.Pattern[bytes] | None = None
    prefix: bytes | None = None
    flag: str = "break"
    status: int = 302  # for redirect and permanent (301)


@dataclass(frozen=True)
class RouteRulesConfig:
    request_headers: HeaderRulesConfig | None = None
    response_headers: HeaderRulesConfig | None = None
    rewrite: tuple[RewriteConfig, ...] = ()
    return_rule: ReturnConfig | None = None


@dataclass(frozen=True)
class RealIpConfig:
    """[real_ip], nginx's realip module: which peers may say who the client is, and how."""

    trusted_proxies: tuple[IpNetwork, ...] = ()
    header: str = "x-forwarded-for"  # or "x-real-ip", "forwarded"
    recursive: bool = True
    x_forwarded_host: bool = False  # send X-Forwarded-Host upstream
    forwarded: bool = False  # send RFC 7239 Forwarded upstream


@dataclass(frozen=True)
class RequestIdConfig:
    header: str = "X-Request-ID"
    keep_incoming: str = "trusted"  # "trusted" (peers in real_ip.trusted_proxies), "always" or "never"
    return_to_client: bool = False


# route keys


def read_route_rules(t: Table) -> RouteRulesConfig | None:
    """The rule keys of one [[route]] table (marked as seen); None when it has none."""
    if not any(t.has(k) for k in ("request_headers", "response_headers", "rewrite", "return")):
        return None
    request = response = None
    if t.has("request_headers"):
        request = _read_header_rules(t.table("request_headers"), request_side=True)
    if t.has("response_headers"):
        response = _read_header_rules(t.table("response_headers"), request_side=False)
    rewrites = tuple(r for r in (_read_rewrite(rt) for rt in t.tables("rewrite")) if r is not None)
    return_rule = _read_return(t) if t.has("return") else None
    return RouteRulesConfig(request, response, rewrites, return_rule)


def _read_header_rules(t: Table, request_side: bool) -> HeaderRulesConfig:
    def allowed(name: str, key: str, how: str) -> bool:
        lower = name.lower()
        if lower in _FRAMING:
            t.issues.add(t.key(key), f"{name}: framing and hop-by-hop headers are the proxy's own")
            return False
        if request_side and lower == "host" and how != "set":
            t.issues.add(t.key(key), "Host can only be set (a request has exactly one)")
            return False
        return True

    def valued(key: str) -> tuple[tuple[str, Template], ...]:
        raw = t.data.get(key, {})
        t.seen.add(key)
        if not isinstance(raw, dict):
            t.issues.add(t.key(key), 'expected a table of header = "value", e.g. { X-Client = "$remote_addr" }')
            return ()
        out = []
        for name, value in raw.items():
            try:
                header_name(name)
                out.append((name, compile_template(string(value))))
            except Invalid as e:
                t.issues.add(f"{t.key(key)}.{name}", str(e))
                continue
            if not allowed(name, f"{key}.{name}", key):
                out.pop()
        return tuple(out)

    no_names: tuple[str, ...] = ()
    removed = [n for n in t.get("remove", list_of(header_name), no_names) if allowed(n, "remove", "remove")]
    always = t.get("always", boolean, False)
    if request_side and t.has("always"):
        t.issues.add(t.key("always"), "always is for response_headers (nginx's add_header ... always)")
    rules = HeaderRulesConfig(remove=tuple(n.lower() for n in removed), set=valued("set"), add=valued("add"),
                              always=always)
    t.done()
    return rules


def _regex(value: Any) -> re.Pattern[bytes]:
    text = string(value)
    try:
        return re.compile(text.encode("latin-1"))
    except (re.error, UnicodeEncodeError) as e:
        raise Invalid(f"not a regular expression: {e}") from None


def _path_prefix(value: Any) -> bytes:
    text = string(value)
    if not text.startswith("/"):
        raise Invalid(f"must start with '/', got {text!r}")
    return text.encode("latin-1")


def _read_rewrite(t: Table) -> RewriteConfig | None:
    pattern = t.get("regex", _regex, None)
    prefix = t.get("prefix", _path_prefix, None)
    flag = t.get("flag", one_of(*FLAGS), "break")
    status = t.get("status", _redirect_status, 301 if flag == "permanent" else 302)
    if t.has("status") and flag not in ("redirect", "permanent"):
        t.issues.add(t.key("status"), f'a status is for flag = "redirect" or "permanent", not {flag!r}')
    if t.has("regex") and t.has("prefix"):
        t.issues.add(t.key("prefix"), "a rewrite has a regex or a prefix, not both")
    elif not t.has("regex") and not t.has("prefix"):
        t.issues.add(t.key("regex"), "a rewrite needs a regex or a prefix")
    captures = pattern.groups if pattern is not None else -1
    replacement = t.get("replacement", lambda v: compile_template(string(v), captures))
    if replacement is not None and flag in ("break", "last") and not replacement.text.startswith(("/", "$")) \
            and not replacement.text.startswith(("http://", "https://")):
        t.issues.add(t.key("replacement"), f"a path must start with '/', got {replacement.text!r}")
    t.done()
    if replacement is None or (pattern is None and prefix is None):
        return None
    return RewriteConfig(replacement, pattern, prefix, flag, status)


def _redirect_status(value: Any) -> int:
    status = integer()(value)
    if status not in REDIRECTS:
        raise Invalid(f"a redirect is one of {', '.join(map(str, REDIRECTS))}, got {status}")
    return status


def _read_return(route: Table) -> ReturnConfig | None:
    raw = route.data.get("return")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"status": raw}
        route.data["return"] = raw
    t = route.table("return")
    status = t.get("status", integer(200, 599), 0)
    location = t.get("location", lambda v: compile_template(string(v)), None)
    body = t.get("body", lambda v: compile_template(string(v), body=True), None)
    content_type = t.get("content_type", string, "text/plain")
    if location is not None and status not in REDIRECTS:
        t.issues.add(t.key("status"), f"a location is for a redirect status ({', '.join(map(str, REDIRECTS))}), "
                     f"got {status}")
    elif location is None and status in REDIRECTS and t.has("status"):
        t.issues.add(t.key("location"), f"a {status} redirect needs a location")
    if location is not None and body is not None:
        t.issues.add(t.key("body"), "a redirect has a location, not a body")
    if any(c in content_type for c in "\r\n\0"):
        t.issues.add(t.key("content_type"), "CR, LF and NUL cannot be in a header value")
    t.done()
    return ReturnConfig(status, location, body, content_type) if status else None


# top-level tables


def _cidr(value: Any) -> IpNetwork:
    text = string(value)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise Invalid(f"not a CIDR: {e}") from None


def read_real_ip(top: Table) -> RealIpConfig | None:
    if not top.has("real_ip"):
        return None
    t = top.table("real_ip")
    config = RealIpConfig(
        trusted_proxies=t.get("trusted_proxies", list_of(_cidr), ()),
        header=t.get("header", lambda v: one_of("x-forwarded-for", "x-real-ip", "forwarded")(string(v).lower()),
                     "x-forwarded-for"),
        recursive=t.get("recursive", boolean, True),
        x_forwarded_host=t.get("x_forwarded_host", boolean, False),
        forwarded=t.get("forwarded", boolean, False),
    )
    t.done()
    return config


def read_request_id(top: Table) -> RequestIdConfig | None:
    if not top.has("request_id"):
        return None
    t = top.table("request_id")
    config = RequestIdConfig(
        header=t.get("header", header_name, "X-Request-ID"),
        keep_incoming=t.get("keep_incoming", one_of("trusted", "always", "never"), "trusted"),
        return_to_client=t.get("return_to_client", boolean, False),
    )
    if config.header.lower() in _FRAMING or config.header.lower() == "host":
        t.issues.add(t.key("header"), f"{config.header} is not for request ids")
    t.done()
    return config


def read_listen_proxy_protocol(t: Table) -> tuple[bool, float]:
    """[[listen]] proxy_protocol (every connection starts with a PROXY v1 or v2 header) and its timeout."""
    enabled = t.get("proxy_protocol", boolean, False)
    timeout = t.get("proxy_protocol_timeout", duration, 30.0)
    if t.has("proxy_protocol_timeout") and not enabled:
        t.issues.add(t.key("proxy_protocol_timeout"), "is for a listener with proxy_protocol = true")
    return enabled, timeout


def read_upstream_proxy_protocol(t: Table) -> int:
    """[[upstream]] proxy_protocol: 0 (off), or the version (1, 2) sent on every new connection."""
    def version(value: Any) -> int:
        if value is False:
            return 0
        if value in ("v1", "v2"):
            return int(value[1])
        raise Invalid(f'expected "v1", "v2" or false, got {value!r}')

    return t.get("proxy_protocol", version, 0)


def check_edge(config: Config, top: Table) -> None:
    """Cross-references: a route answers or forwards, and PROXY headers go to tcp upstreams only."""
    issues = top.issues
    for i, route in enumerate(config.routes):
        rules = route.rules
        answers = rules is not None and rules.return_rule is not None
        if answers and route.upstream:
            issues.add(f"route[{i}].return", "a route with a return answers every request itself: it has no upstream")
        elif not answers and not route.upstream:
            issues.add(f"route[{i}].upstream", "a route needs an upstream (or a return)")
    http_upstreams = {route.upstream for route in config.routes}
    http_upstreams.update(listen.upstream for listen in config.listen if listen.protocol == "http" and listen.upstream)
    for i, u in enumerate(config.upstreams):
        if u.proxy_protocol and u.name in http_upstreams:
            issues.add(f"upstream[{i}].proxy_protocol", f"upstream {u.name!r} serves http: the PROXY protocol is "
                       "sent on tcp upstreams only (http upstreams get X-Forwarded-For, X-Real-IP)")
