"""``round_robin``: nginx's default method, smooth weighted round robin."""

from __future__ import annotations

from ukproxy.upstream.balancers.rotating import RotatingBalancer
from ukproxy.upstream.server import Server


class RoundRobinBalancer(RotatingBalancer):
    method = "round_robin"

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        return self.rotation.choose(candidates)
