"""A balancer that falls back on (or is) nginx's smooth weighted round robin among its choices."""

from __future__ import annotations

from collections.abc import Sequence

from ukproxy.upstream.balancers.base import Balancer
from ukproxy.upstream.balancers.smooth_weighted import SmoothWeightedRoundRobin
from ukproxy.upstream.server import Server


class RotatingBalancer(Balancer):
    """Keeps one rotation over the servers; subclasses that add state extend `_servers_changed`."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self.rotation = SmoothWeightedRoundRobin()
        super().__init__(servers)

    def _servers_changed(self) -> None:
        # Servers that left are forgotten; survivors keep their place in the rotation.
        self.rotation.keep_only(self.servers)
