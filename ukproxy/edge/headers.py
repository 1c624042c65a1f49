"""Header rules: remove, set or add request headers on the way up and response headers on the way down.

nginx spreads this over proxy_set_header, proxy_hide_header and add_header; here one rule set per
direction, per route, applied in one pass: the removed and set names are dropped, then the set and
added values appended (rendered with their variables, edge/variables.py). A value that renders empty
is not sent, as nginx sends no header whose value is empty. Lines are "Name: value\r\n", as the
proxy keeps them (http_messages.py).

Response rules follow add_header's status rule: set and add apply to the answers nginx lists (`SUCCESS`),
or to every answer with `always` (nginx's `add_header ... always`), the proxy's own 401/403/429/5xx
included; remove applies to every upstream answer, as proxy_hide_header does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ukproxy.edge.rules_config import HeaderRulesConfig
    from ukproxy.edge.variables import RequestContext, Template


# The statuses nginx's add_header applies to without `always` (ngx_http_headers_filter).
SUCCESS: Final = frozenset((200, 201, 204, 206, 301, 302, 303, 304, 307, 308))


class HeaderRules:
    __slots__ = ("always", "appends", "drops", "removed")

    def __init__(self, drops: frozenset[bytes], appends: list[tuple[bytes, Template]],
                 removed: frozenset[bytes] = frozenset(), always: bool = False):
        self.drops = drops  # lower-cased names whose lines go
        self.appends = appends  # (name, value) lines that come
        self.removed = removed  # the names `remove` lists (drops without the set names)
        self.always = always  # response rules: set and add on every status, not only SUCCESS

    @classmethod
    def from_config(cls, config: HeaderRulesConfig | None) -> HeaderRules | None:
        if config is None or not (config.remove or config.set or config.add):
            return None
        removed = frozenset(n.lower().encode() for n in config.remove)
        drops = removed | frozenset(name.lower().encode() for name, _ in config.set)
        appends = [(name.encode(), value) for name, value in (*config.set, *config.add)]
        return cls(drops, appends, removed, config.always)

    def for_status(self, lines: list[bytes], context: RequestContext, status: int) -> list[bytes]:
        """A response's lines under these rules: set and add only where add_header's status rule lets them."""
        if self.always or status in SUCCESS:
            return self.apply(lines, context)
        return drop_lines(lines, self.removed) if self.removed else lines

    def apply(self, lines: list[bytes], context: RequestContext) -> list[bytes]:
        """A new list: `lines` is the parser's or the response's own."""
        out = drop_lines(lines, self.drops) if self.drops else list(lines)
        self.append_to(out, context)
        return out

    def append_to(self, out: list[bytes], context: RequestContext) -> None:
        """The set and added lines, at the end of `out`."""
        for name, template in self.appends:
            value = template.render(context)
            if value:
                out.append(name + b": " + value + b"\r\n")


def drop_lines(lines: list[bytes], names: frozenset[bytes]) -> list[bytes]:
    """The lines whose (lower-cased) names are not in `names`."""
    return [line for line in lines if line[:line.find(b":")].lower() not in names]
