"""``least_conn``: fewest active connections per unit of weight; ties go round robin.

As nginx's ngx_http_upstream_least_conn_module.c: compare ``active / weight`` (by cross
multiplication, no floats) and, when several servers share the smallest ratio, let smooth
weighted round robin choose among just those.
"""

from __future__ import annotations

from ukproxy.upstream.balancers.rotating import RotatingBalancer
from ukproxy.upstream.server import Server


class LeastConnBalancer(RotatingBalancer):
    method = "least_conn"

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        least = [candidates[0]]
        for server in candidates[1:]:
            best = least[0]
            # server.active / server.weight  vs  best.active / best.weight
            lhs, rhs = server.active * best.weight, best.active * server.weight
            if lhs < rhs:
                least = [server]
            elif lhs == rhs:
                least.append(server)
        if len(least) == 1:
            return least[0]
        return self.rotation.choose(least)
