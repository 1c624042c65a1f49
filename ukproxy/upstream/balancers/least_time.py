"""``least_time``: the server expected to answer soonest, from measured response times.

Each server keeps an EWMA of its response times (``Server.record_success(response_time)``,
``ewma = alpha * sample + (1 - alpha) * ewma``; ``alpha`` is this method's option).
The score, lowest first, is

    score = ewma_response_time * (active + 1) / weight

as in nginx plus: the time one more request would wait behind the ones already running,
shared out by weight. Servers without a sample yet come before every measured one (so each
gets measured), least connected first. Equal scores go to smooth weighted round robin.
"""

from __future__ import annotations

from collections.abc import Sequence

from ukproxy.upstream.balancers.rotating import RotatingBalancer
from ukproxy.upstream.server import Server


def least_time_score(server: Server) -> tuple[int, float]:
    """Sort key: (0, load) for servers not yet measured, (1, expected time) for the others."""
    if server.ewma_response_time is None:
        return (0, server.active / server.weight)
    return (1, server.ewma_response_time * (server.active + 1) / server.weight)


class LeastTimeBalancer(RotatingBalancer):
    method = "least_time"

    def __init__(self, servers: Sequence[Server], alpha: float | None = None) -> None:
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"least_time: alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        super().__init__(servers)

    def _servers_changed(self) -> None:
        super()._servers_changed()
        if self.alpha is not None:
            for server in self.servers:
                server.ewma_alpha = self.alpha

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        scores = [least_time_score(s) for s in candidates]
        best = min(scores)
        fastest = [s for s, score in zip(candidates, scores, strict=True) if score == best]
        if len(fastest) == 1:
            return fastest[0]
        return self.rotation.choose(fastest)
