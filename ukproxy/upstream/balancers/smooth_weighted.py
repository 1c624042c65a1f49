"""Nginx's smooth weighted round robin, as a reusable chooser.

Every pick, each candidate's current weight grows by its effective weight; the largest
current weight wins and the winner pays back the sum of the effective weights. For weights
5, 1, 1 this yields a a b a c a a: the heavy server's turns are spread out, not bunched.
Candidates that are skipped (unavailable, tried) take no part, as in nginx.
"""

from __future__ import annotations

from collections.abc import Sequence

from ukproxy.upstream.server import Server


class SmoothWeightedRoundRobin:
    def __init__(self) -> None:
        self.current_weight: dict[Server, int] = {}

    def keep_only(self, servers: Sequence[Server]) -> None:
        """Forget servers that left; survivors keep their place in the rotation."""
        self.current_weight = {s: self.current_weight.get(s, 0) for s in servers}

    def choose(self, candidates: Sequence[Server]) -> Server:
        current = self.current_weight
        best: Server | None = None
        best_weight = 0
        total = 0
        for server in candidates:
            effective = server.effective_weight
            weight = current.get(server, 0) + effective
            current[server] = weight
            total += effective
            # A failure lowered effective_weight; each pick it takes part in recovers one step.
            if effective < server.weight:
                server.effective_weight = effective + 1
            if best is None or weight > best_weight:
                best, best_weight = server, weight
        assert best is not None, "choose() needs at least one candidate"
        current[best] = best_weight - total
        return best
