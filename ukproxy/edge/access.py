"""allow/deny by address (nginx's ngx_http_access_module): rules tried in order, the first match wins.

A client no rule matches is allowed, as in nginx (end a list with "deny all" to refuse the rest). An
IPv4-mapped IPv6 address (::ffff:a.b.c.d, a dual-stack listener's IPv4 client) is matched as the IPv4
address it is. Verdicts are remembered per address (bounded), so a keep-alive client's later requests
cost one dict lookup. docs/architecture.md, "The edge".
"""

from __future__ import annotations

import ipaddress
from typing import Final

from ukproxy.edge.guard_config import AccessRule

_REMEMBERED: Final = 8192


class AccessList:
    def __init__(self, rules: tuple[AccessRule, ...]):
        self.rules = rules
        self.verdicts: dict[bytes, bool] = {}

    def allows(self, client_ip: bytes) -> bool:
        verdict = self.verdicts.get(client_ip)
        if verdict is None:
            verdict = self._decide(client_ip)
            if len(self.verdicts) >= _REMEMBERED:
                self.verdicts.clear()
            self.verdicts[client_ip] = verdict
        return verdict

    def _decide(self, client_ip: bytes) -> bool:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            address = ipaddress.ip_address(client_ip.decode("ascii").split("%", 1)[0])
        except (UnicodeDecodeError, ValueError):
            address = None  # not an IP address (a unix socket's "-"): only "all" rules match it
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule in self.rules:
            net = rule.network
            if net is None:
                return rule.allow
            if address is not None and address.version == net.version and address in net:
                return rule.allow
        return True
