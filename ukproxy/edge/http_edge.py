"""The edge rules of one http listener, applied to each request: the seam between the proxy and edge/.

`HttpSite.edge` is None when nothing here is configured (no [real_ip], no [request_id], no route
with rules), and then a request costs what it did before. Otherwise `EdgeSite.plan` runs once per
request, after routing: it settles the request id, applies the route's rewrites (re-routing on
`last`) and return, and gives the exchange an `EdgePlan` that builds the upstream request head
(forwarding headers, the id, the route's request rules) and filters the response's header lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ukproxy.edge.headers import HeaderRules, drop_lines
from ukproxy.edge.realip import RealIp
from ukproxy.edge.request_id import acceptable, new_request_id
from ukproxy.edge.rewrite import LAST, FixedReply, RouteRules
from ukproxy.edge.variables import RequestContext
from ukproxy.proxy.http_request import SPECIAL

if TYPE_CHECKING:
    from ukproxy.config import Config
    from ukproxy.proxy.http_request import RequestHead
    from ukproxy.proxy.routing import RouteMatch, Router

MAX_REROUTES: Final = 10  # nginx's bound on rewrite ... last cycles
_VIA_SELF: Final = {b"1.1": b"1.1 ukproxy", b"1.0": b"1.0 ukproxy", b"2.0": b"2 ukproxy"}  # as http_messages
_NONE: Final = frozenset[bytes]()
# What an untrusted peer may not tell upstream (the proxy's own X-Forwarded-For/-Proto, X-Real-IP and
# Via are made from SPECIAL fields; these others would pass as they came).
_FORWARDING: Final = frozenset((b"forwarded", b"x-forwarded-host", b"x-forwarded-port", b"x-forwarded-prefix",
                                b"x-forwarded-server"))


class EdgeSite:
    def __init__(self, config: Config, router: Router, real_ip: RealIp | None):
        self.router = router
        self.real_ip = real_ip
        self.scheme = b"http"
        self.x_forwarded_host = config.real_ip is not None and config.real_ip.x_forwarded_host
        self.forwarded = config.real_ip is not None and config.real_ip.forwarded
        request_id = config.request_id
        self.id_header = request_id.header.encode() if request_id is not None else None
        self.id_name = self.id_header.lower() if self.id_header is not None else b""
        self.keep_ids = request_id.keep_incoming if request_id is not None else "never"
        self.return_id = request_id is not None and request_id.return_to_client
        self.every_request = real_ip is not None or request_id is not None  # else only routes with rules
        self._drops: dict[tuple[int, bool], frozenset[bytes]] = {}  # client_drops, per (rules, trusted)
        # Per [[route]] (by identity: RouteMatch.route is the config object itself), its rules at run time.
        self.rules: dict[int, RouteRules] = {}
        for route in config.routes:
            r = route.rules
            if r is not None:
                self.rules[id(route)] = RouteRules(r.rewrite, r.return_rule, HeaderRules.from_config(r.request_headers),
                                                   HeaderRules.from_config(r.response_headers))

    def client_drops(self, rules: HeaderRules | None, trusted: bool) -> frozenset[bytes]:
        """The names of the client's own lines that do not go upstream: what the route's rules remove or set,
        the request id's (ours replaces it), the forwarding headers we make, an untrusted peer's forwarding."""
        key = (id(rules), trusted)
        drops = self._drops.get(key)
        if drops is None:
            names = set(rules.drops) if rules is not None else set()
            if self.id_header is not None:
                names.add(self.id_name)
            if self.real_ip is not None and not trusted:
                names |= _FORWARDING
            if self.forwarded:
                names.add(b"forwarded")  # merged into ours
            drops = self._drops[key] = frozenset(names)
        return drops

    @classmethod
    def from_config(cls, config: Config, router: Router, real_ip: RealIp | None) -> EdgeSite | None:
        if config.real_ip is None and config.request_id is None and not any(r.rules for r in config.routes):
            return None
        return cls(config, router, real_ip)

    def plan(self, head: RequestHead, match: RouteMatch | None, client_ip: bytes, peer_ip: bytes
             ) -> EdgePlan | None:
        """None when nothing here applies to the request (a route without rules, and no [real_ip] or
        [request_id]): it then costs a dict lookup."""
        if not self.every_request and (match is None or id(match.route) not in self.rules):
            return None
        trusted = self.real_ip is not None and self.real_ip.trusts(peer_ip)
        if self.id_header is not None:
            incoming = head.header(self.id_name)
            keep = self.keep_ids == "always" or (self.keep_ids == "trusted" and trusted)
            head.request_id = incoming if keep and acceptable(incoming) else new_request_id()
        plan = EdgePlan(self, head, client_ip, match, trusted, peer_ip)
        for _ in range(MAX_REROUTES + 1):
            rules = self.rules.get(id(match.route)) if match is not None else None
            plan.rules = rules
            if rules is None:
                return plan
            before = plan.target
            outcome = rules.rewrite(plan)
            if isinstance(outcome, FixedReply):
                plan.reply = outcome
                return plan
            if outcome == LAST:
                match = plan.match = self.router.match(head.host, plan.target)
                continue
            if plan.target != before:
                plan.path = plan.target  # a rewrite's path goes upstream as it is (no strip_prefix)
            plan.reply = rules.answer(plan)
            return plan
        plan.reply = FixedReply(500, body=b"500 rewrite cycle\n")
        plan.rules = None
        return plan


class EdgePlan(RequestContext):
    """What the edge rules decided for one request; also the context its rules' variables are read from."""

    reply: FixedReply | None = None  # the proxy answers itself (return, redirect)
    rules: RouteRules | None = None

    def __init__(self, site: EdgeSite, head: RequestHead, client_ip: bytes, match: RouteMatch | None, trusted: bool,
                 peer_ip: bytes):
        super().__init__(head, client_ip, site.scheme)
        self.site = site
        self.match = match  # after any `last` rewrites
        self.trusted = trusted  # the peer is a trusted proxy: its forwarding headers are kept
        self.peer_ip = peer_ip
        self.path: bytes | None = None  # the path a rewrite made; None: the match's

    @property
    def status(self) -> int:
        return self.reply.status if self.reply is not None else 404

    def upstream_head(self, path: bytes, host: bytes) -> bytes:
        """The request as it goes upstream (as http_messages.upstream_request_head builds it), with the
        forwarding headers [real_ip] asks for, the request id and the route's request rules. Built in one
        pass: the client's lines that go are dropped once, the proxy's own lines a rule replaces are never made."""
        site = self.site
        head = self.head
        rules = self.rules.request_headers if self.rules is not None else None
        replaced = rules.drops if rules is not None else _NONE  # names the route removes or sets
        lines = head.lines
        named = head.connection_tokens
        if named and not named <= SPECIAL:
            lines = drop_lines(lines, named)
        drops = site.client_drops(rules, self.trusted)
        if drops:
            lines = drop_lines(lines, drops)
        out = [b"%s %s HTTP/1.1\r\n" % (head.method, path)]
        if b"host" not in replaced:
            out.append(b"Host: %s\r\n" % host)
        out += lines
        trusted = self.trusted or site.real_ip is None  # without [real_ip], forwarding headers pass (nginx)
        if b"x-forwarded-for" not in replaced:
            peer = self.peer_ip
            out.append(b"X-Forwarded-For: %s, %s\r\n" % (head.forwarded_for, peer) if head.forwarded_for and trusted
                       else b"X-Forwarded-For: %s\r\n" % peer)
        if b"x-real-ip" not in replaced:
            out.append(b"X-Real-IP: %s\r\n" % self.client_ip)
        if b"x-forwarded-proto" not in replaced:
            proto = (head.header(b"x-forwarded-proto") if self.trusted else None) or site.scheme
            out.append(b"X-Forwarded-Proto: %s\r\n" % proto)
        if b"via" not in replaced:
            via = _VIA_SELF[head.version]
            out.append(b"Via: %s, %s\r\n" % (head.via, via) if head.via else b"Via: %s\r\n" % via)
        if site.x_forwarded_host and b"x-forwarded-host" not in replaced and not (
                self.trusted and head.header(b"x-forwarded-host")):
            out.append(b"X-Forwarded-Host: %s\r\n" % (head.host_header or host))
        if site.forwarded and b"forwarded" not in replaced:
            out.append(self._forwarded(host))
        if head.request_id is not None and site.id_header is not None and site.id_name not in replaced:
            out.append(b"%s: %s\r\n" % (site.id_header, head.request_id))
        if rules is not None:
            rules.append_to(out, self)
        if head.chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        elif head.content_length is not None:
            out.append(b"Content-Length: %d\r\n" % head.content_length)
        if head.upgrade is not None:
            out.append(b"Connection: upgrade\r\nUpgrade: " + head.upgrade + b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def _forwarded(self, host: bytes) -> bytes:
        """RFC 7239: this hop's element, after a trusted proxy's (one line: the earlier ones merged)."""
        head = self.head
        peer = self.peer_ip
        node = b'"[%s]"' % peer if b":" in peer else peer
        element = b'for=%s;host="%s";proto=%s' % (node, head.host_header or host, self.site.scheme)
        if self.trusted:
            earlier = [line[10:-2].strip() for line in head.lines if line[:10].lower() == b"forwarded:"]
            if earlier:
                element = b", ".join([*earlier, element])
        return b"Forwarded: %s\r\n" % element

    def response_lines(self, lines: list[bytes], status: int) -> list[bytes]:
        """A `status` response's header lines as the client gets them: the route's response rules (set and add
        by add_header's status rule, edge/headers.py), then the request id."""
        rules = self.rules
        if rules is not None and rules.response_headers is not None:
            lines = rules.response_headers.for_status(lines, self, status)
        site = self.site
        request_id = self.head.request_id
        if site.return_id and request_id is not None and site.id_header is not None:
            lines = [*drop_lines(lines, frozenset((site.id_name,))), b"%s: %s\r\n" % (site.id_header, request_id)]
        return lines

    def answer_lines(self, status: int) -> bytes:
        """The header lines of the proxy's own `status` answer (a guard's 401/403/429, a 502 or 504): what the
        route's response rules add to it (with `always`, as nginx's error answers) and the request id."""
        return b"".join(self.response_lines([], status))

    def reply_bytes(self, keep_alive: bool, head_only: bool) -> bytes:
        """The proxy's own answer (a return, a redirect, or the 404 when nothing matched)."""
        reply = self.reply or FixedReply(404)
        return reply.render(keep_alive, head_only, self.response_lines([], reply.status))
