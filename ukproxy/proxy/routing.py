"""Which upstream serves a request: by Host, then by the longest matching path prefix.

One site is composed from services: `[[route]]` entries map (host, path prefix) to an upstream,
optionally stripping the prefix before the request goes on. Hosts are tried from the most to the
least specific (exact name, then `*.suffix` wildcards by length, then `*`); within a host the longest
prefix wins. A prefix matches on path segments: `/api` matches `/api`, `/api/x` and `/api?q`, not
`/apix`; a prefix ending in `/` matches everything under it. No route → the listener's own upstream,
or None (the caller answers 404).
"""

from __future__ import annotations

from dataclasses import dataclass

from ukproxy.config import RouteConfig

_HOSTS_CACHED = 1024  # hosts whose route tables are remembered (a client may send any Host)


class RouteMatch:
    def __init__(self, upstream: str, path: bytes, route: RouteConfig | None = None):
        self.upstream = upstream
        self.path = path  # the path (and query) to send upstream, prefix stripped if the route says so
        self.route = route  # the [[route]] that matched; None for the listener's own upstream


@dataclass(frozen=True)
class _Route:
    prefix: bytes
    upstream: str
    strip: bool
    config: RouteConfig  # for what a route sets beyond its upstream (compression, ...)


class Router:
    def __init__(self, routes: tuple[RouteConfig, ...] | list[RouteConfig], default_upstream: str | None = None):
        self.default_upstream = default_upstream
        by_host: dict[str, list[_Route]] = {}
        for r in routes:
            by_host.setdefault(r.host.lower(), []).append(_Route(r.prefix.encode(), r.upstream, r.strip_prefix, r))
        for table in by_host.values():
            table.sort(key=lambda route: len(route.prefix), reverse=True)  # longest prefix first
        self.exact = {h: t for h, t in by_host.items() if not h.startswith("*")}
        # "*.example.com" → ".example.com", longest suffix first.
        self.wildcards = sorted(
            ((h[1:], t) for h, t in by_host.items() if h.startswith("*.")), key=lambda item: len(item[0]), reverse=True
        )
        self.any = by_host.get("*", [])
        self._tables_by_host: dict[str, list[list[_Route]]] = {}

    def match(self, host: str, target: bytes) -> RouteMatch | None:
        """`host` lower-cased without port; `target` the origin-form request target (path and query)."""
        for table in self._tables(host):
            for route in table:
                rest = _after_prefix(target, route.prefix)
                if rest is not None:
                    return RouteMatch(route.upstream, _strip(rest) if route.strip else target, route.config)
        if self.default_upstream is not None:
            return RouteMatch(self.default_upstream, target)
        return None

    def _tables(self, host: str) -> list[list[_Route]]:
        tables = self._tables_by_host.get(host)
        if tables is None:
            if len(self._tables_by_host) >= _HOSTS_CACHED:
                self._tables_by_host.clear()
            tables = self._tables_by_host[host] = self._find_tables(host)
        return tables

    def _find_tables(self, host: str) -> list[list[_Route]]:
        tables = []
        exact = self.exact.get(host)
        if exact:
            tables.append(exact)
        tables.extend(table for suffix, table in self.wildcards if host.endswith(suffix))
        if self.any:
            tables.append(self.any)
        return tables


def _after_prefix(target: bytes, prefix: bytes) -> bytes | None:
    """What follows `prefix` in `target` when it matches on a segment boundary, else None."""
    if not target.startswith(prefix):
        return None
    rest = target[len(prefix):]
    if prefix.endswith(b"/") or not rest or rest[:1] in (b"/", b"?"):
        return rest
    return None


def _strip(rest: bytes) -> bytes:
    """The target once the prefix is gone: always origin-form again."""
    if not rest or rest.startswith(b"?"):
        return b"/" + rest
    return rest if rest.startswith(b"/") else b"/" + rest
