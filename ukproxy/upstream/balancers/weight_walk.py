"""Map a number onto servers laid end to end, each as wide as its weight."""

from __future__ import annotations

from collections.abc import Sequence

from ukproxy.upstream.server import Server


def total_weight(servers: Sequence[Server]) -> int:
    return sum(s.weight for s in servers)


def server_at_weight(servers: Sequence[Server], w: int) -> Server:
    """The server whose stretch of ``[0, total_weight)`` contains ``w``."""
    for server in servers:
        if w < server.weight:
            return server
        w -= server.weight
    raise ValueError("weight position beyond the total weight")
