"""Header rules: remove, set or add request headers on the way up and response headers on the way down.

nginx spreads this over proxy_set_header, proxy_hide_header and add_header; here one rule set per
direction, per route, applied in one pass: the removed and set names are dropped, then the set and
added values appended (rendered with their variables, edge/variables.py). A value that renders empty
is not sent, as nginx sends no header whose value is empty. Lines are "Name: value\r\n", as the
proxy keeps them (http_messages.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ukproxy.edge.rules_config import HeaderRulesConfig
    from ukproxy.edge.variables import RequestContext, Template


class HeaderRules:
    __slots__ = ("appends", "drops")

    def __init__(self, drops: frozenset[bytes], appends: list[tuple[bytes, Template]]):
        self.drops = drops  # lower-cased names whose lines go
        self.appends = appends  # (name, value) lines that come

    @classmethod
    def from_config(cls, config: HeaderRulesConfig | None) -> HeaderRules | None:
        if config is None or not (config.remove or config.set or config.add):
            return None
        drops = frozenset(n.lower().encode() for n in (*config.remove, *(name for name, _ in config.set)))
        appends = [(name.encode(), value) for name, value in (*config.set, *config.add)]
        return cls(drops, appends)

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
