"""The compression keys (nginx's gzip_* and ngx_brotli's brotli_* names) and how the levels combine.

The keys may be given in `[http]` (every http listener), in a `[[listen]]` and in a `[[route]]`. As
nginx's http / server / location blocks inherit directives, a request's settings are the route's keys
over its listener's over `[http]`'s, key by key (`CompressKeys.over`). `policy()` turns the merged keys
into a `CompressPolicy`, or None when neither gzip nor brotli is on: then the request path never looks
at compression at all (docs/architecture.md, "The data path").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ukproxy.config_reader import Invalid, Table, boolean, integer, list_of, one_of, size, string

if TYPE_CHECKING:
    from ukproxy.config import RouteConfig

# A media type as gzip_types lists it: "type/subtype" (lower-cased), or "*" for every type.
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
ALWAYS_TYPE = "text/html"  # nginx compresses text/html whatever gzip_types says
# Statuses nginx's gzip filter compresses; 206 (ranges), 204 and 304 (no body) and the rest are passed as they are.
STATUSES = frozenset((200, 403, 404))


def media_type(value: Any) -> str:
    text = string(value).strip().lower()
    if text != "*" and not _MEDIA_TYPE.fullmatch(text):
        raise Invalid(f'expected a media type such as "application/json" (or "*"), got {value!r}')
    return text


@dataclass(frozen=True)
class CompressKeys:
    """The compression keys given at one level; None: not given there (inherited from the level above)."""

    gzip: bool | None = None
    gzip_types: tuple[str, ...] | None = None
    gzip_min_length: int | None = None
    gzip_comp_level: int | None = None
    gzip_vary: bool | None = None
    gzip_http_version: str | None = None
    gzip_proxied: str | None = None
    brotli: bool | None = None
    brotli_types: tuple[str, ...] | None = None
    brotli_min_length: int | None = None
    brotli_comp_level: int | None = None

    def over(self, base: CompressKeys) -> CompressKeys:
        """These keys where given, `base`'s elsewhere."""
        if base == CompressKeys():
            return self
        mine = {f.name: getattr(self, f.name) for f in fields(self)}
        return CompressKeys(**{name: value if value is not None else getattr(base, name)
                               for name, value in mine.items()})


NO_KEYS = CompressKeys()


def read_compress_keys(t: Table) -> CompressKeys:
    """The gzip_* and brotli_* keys of one table (marked as seen, so `done()` does not call them unknown)."""
    def opt(name: str, convert: Any) -> Any:
        return t.get(name, convert, None) if t.has(name) else None

    keys = CompressKeys(
        gzip=opt("gzip", boolean),
        gzip_types=opt("gzip_types", list_of(media_type)),
        gzip_min_length=opt("gzip_min_length", size),
        gzip_comp_level=opt("gzip_comp_level", integer(1, 9)),
        gzip_vary=opt("gzip_vary", boolean),
        gzip_http_version=opt("gzip_http_version", one_of("1.0", "1.1")),
        gzip_proxied=opt("gzip_proxied", _proxied),
        brotli=opt("brotli", boolean),
        brotli_types=opt("brotli_types", list_of(media_type)),
        brotli_min_length=opt("brotli_min_length", size),
        brotli_comp_level=opt("brotli_comp_level", integer(0, 11)),
    )
    if keys.brotli and not brotli_available():
        t.issues.add(t.key("brotli"), "the brotli package is not installed (pip install brotli)")
    return keys


def _proxied(value: Any) -> str:
    text = string(value)
    if text not in ("off", "any"):
        raise Invalid(f'must be "off" (no compression for requests that came through a proxy, that is with a Via '
                      f'header) or "any"; nginx\'s finer conditions (expired, no-cache, ...) are not offered, '
                      f"got {value!r}")
    return text


def brotli_available() -> bool:
    try:
        import brotli  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class CodingRule:
    """When one content coding applies: the response's media type and its least length."""

    name: bytes  # the token in Accept-Encoding and Content-Encoding: b"gzip", b"br"
    types: frozenset[str]  # media types, "*" for all
    min_length: int
    level: int

    def takes(self, media: str, length: int | None) -> bool:
        if length is not None and length < self.min_length:
            return False
        return media in self.types or "*" in self.types


@dataclass(frozen=True)
class CompressPolicy:
    """What compression a listener or route does, resolved from its keys; codings in the order preferred."""

    codings: tuple[CodingRule, ...]
    vary: bool
    http_10: bool  # HTTP/1.0 clients too (gzip_http_version = "1.0"): their responses end with the connection
    proxied: bool  # also requests that came through a proxy (gzip_proxied = "any")


def policy(keys: CompressKeys) -> CompressPolicy | None:
    codings = []
    if keys.brotli:  # smaller than gzip at like cost: preferred when the client takes both alike
        codings.append(CodingRule(b"br", frozenset((ALWAYS_TYPE, *(keys.brotli_types or ()))),
                                  _or(keys.brotli_min_length, 20), _or(keys.brotli_comp_level, 6)))
    if keys.gzip:
        codings.append(CodingRule(b"gzip", frozenset((ALWAYS_TYPE, *(keys.gzip_types or ()))),
                                  _or(keys.gzip_min_length, 20), _or(keys.gzip_comp_level, 1)))
    if not codings:
        return None
    return CompressPolicy(tuple(codings), vary=_or(keys.gzip_vary, True),
                          http_10=keys.gzip_http_version == "1.0", proxied=keys.gzip_proxied == "any")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


class SiteCompression:
    """The policy for each [[route]] of one http listener, and for its own upstream (no route matched)."""

    def __init__(self, http: CompressKeys, listen: CompressKeys, routes: Iterable[RouteConfig]):
        base = listen.over(http)
        self.default = policy(base)
        # By identity: the router hands back the very RouteConfig that matched, and hashing a dataclass costs.
        self.by_route = {id(route): policy(route.compress.over(base)) for route in routes}

    @property
    def compresses(self) -> bool:
        return self.default is not None or any(p is not None for p in self.by_route.values())

    def lookup(self, route: RouteConfig | None) -> CompressPolicy | None:
        return self.default if route is None else self.by_route.get(id(route), self.default)
