"""``round_robin``: nginx's default method, smooth weighted round robin."""

from __future__ import annotations

from collections.abc import Sequence

from ukproxy.upstream.balancers.base import Balancer
from ukproxy.upstream.balancers.smooth_weighted import SmoothWeightedRoundRobin
from ukproxy.upstream.server import Server


class RoundRobinBalancer(Balancer):
    method = "round_robin"

    def __init__(self, servers: Sequence[Server]) -> None:
        self.rotation = SmoothWeightedRoundRobin()
        super().__init__(servers)

    def _servers_changed(self) -> None:
        self.rotation.keep_only(self.servers)

    def _choose(self, candidates: list[Server], key: bytes | None) -> Server:
        return self.rotation.choose(candidates)
