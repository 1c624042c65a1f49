"""Rewrite and return rules, as nginx's `rewrite` and `return`.

A route's rewrites are tried in order on the request's path (without its query). The first that
matches (a regex, or a path prefix on a segment boundary as routes match) replaces the path and:
  break      the request goes to this route's upstream with the new path (the default);
  last       the new path is routed again (at most 10 times, then 500, as nginx);
  redirect   a 302 (or `status`) to the new target; permanent: a 301 (or `status`).
A replacement that starts with http:// or https:// is always a redirect. The query is kept, after
the replacement's own if it has one, unless the replacement ends with "?" (nginx's rule).
`return` answers with a fixed status and body, or a redirect to `location`, after any rewrites.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ukproxy.edge.headers import HeaderRules
    from ukproxy.edge.rules_config import ReturnConfig, RewriteConfig
    from ukproxy.edge.variables import RequestContext

BREAK: Final = 0  # go on to this route's upstream
LAST: Final = 1  # route the new path again


class FixedReply:
    """A response the proxy makes itself: a return, or a redirect from a rewrite."""

    def __init__(self, status: int, location: bytes | None = None, body: bytes | None = None,
                 content_type: bytes = b"text/plain"):
        self.status = status
        self.location = location
        self.content_type = content_type
        if body is None:
            body = b"%d %s\n" % (status, _phrase(status)) if status >= 300 else b""
        self.body = body

    def render(self, keep_alive: bool, head_only: bool, extra: list[bytes] | None = None) -> bytes:
        """`extra`: header lines from the route's response rules."""
        lines = [b"HTTP/1.1 %d %s\r\nServer: ukproxy\r\n" % (self.status, _phrase(self.status))]
        if self.location is not None:
            lines.append(b"Location: %s\r\n" % self.location)
        bodyless = self.status in (204, 304)
        if not bodyless:
            lines.append(b"Content-Type: %s\r\nContent-Length: %d\r\n" % (self.content_type, len(self.body)))
        if extra:
            lines.extend(extra)
        lines.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
        if not head_only and not bodyless:
            lines.append(self.body)
        return b"".join(lines)


def after_prefix(path: bytes, prefix: bytes) -> bytes | None:
    """What follows `prefix` in `path` on a segment boundary, as routes match (proxy/routing.py), else None."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix):]
    return rest if prefix.endswith(b"/") or not rest or rest.startswith(b"/") else None


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class RouteRules:
    """One route's rules at run time: its rewrites, its return, its header rules both ways."""

    __slots__ = ("request_headers", "response_headers", "return_rule", "rewrites")

    def __init__(self, rewrites: tuple[RewriteConfig, ...], return_rule: ReturnConfig | None,
                 request_headers: HeaderRules | None, response_headers: HeaderRules | None):
        self.rewrites = rewrites
        self.return_rule = return_rule
        self.request_headers = request_headers
        self.response_headers = response_headers

    def rewrite(self, context: RequestContext) -> int | FixedReply:
        """Apply the first rewrite that matches `context.target` (changed in place): BREAK, LAST or a redirect."""
        if not self.rewrites:
            return BREAK
        target = context.target
        path, question, query = target.partition(b"?")
        for rule in self.rewrites:
            if rule.pattern is not None:
                m = rule.pattern.search(path)
                if m is None:
                    continue
                context.groups = tuple(g or b"" for g in m.groups())
                new = rule.replacement.render(context)
            else:
                assert rule.prefix is not None
                rest = after_prefix(path, rule.prefix)
                if rest is None:
                    continue
                new = rule.replacement.render(context) + rest
            if new.endswith(b"?"):
                new = new[:-1]  # nginx: a replacement ending in "?" drops the query
            elif question:
                new += (b"&" if b"?" in new else b"?") + query
            if rule.flag in ("redirect", "permanent") or new.startswith((b"http://", b"https://")):
                status = rule.status if rule.flag in ("redirect", "permanent") else 302
                return FixedReply(status, location=new)
            context.target = new if new.startswith(b"/") else b"/" + new
            return LAST if rule.flag == "last" else BREAK
        return BREAK

    def answer(self, context: RequestContext) -> FixedReply | None:
        rule = self.return_rule
        if rule is None:
            return None
        return FixedReply(
            rule.status,
            location=rule.location.render(context) if rule.location is not None else None,
            body=rule.body.render(context) if rule.body is not None else None,
            content_type=rule.content_type.encode("latin-1"),
        )
