"""``random``: weighted random choice, by default with the "power of two choices".

With ``two=True`` (as nginx's ``random two``) two distinct servers are drawn at random,
each with probability proportional to its weight, and the one with fewer active
connections per unit of weight gets the request. That one extra draw avoids most of the
pile-ups plain random choice makes, without any shared state. ``two=False`` is plain
weighted random. ``rng`` can be injected for reproducible tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ukproxy.upstream.balancers.base import Balancer
from ukproxy.upstream.balancers.weight_walk import server_at_weight, total_weight
from ukproxy.upstream.server import Server


class RandomBalancer(Balancer):
    method = "random"

    def __init__(self, servers: Sequence[Server], two: bool = True, rng: random.Random | None = None) -> None:
        self.two = two
        self.rng = rng if rng is not None else random.Random()
        super().__init__(servers)

    def _draw(self, candidates: Sequence[Server]) -> Server:
        return server_at_weight(candidates, self.rng.randrange(total_weight(candidates)))

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        first = self._draw(candidates)
        if not self.two or len(candidates) == 1:
            return first
        second = self._draw([s for s in candidates if s is not first])
        # second.active / second.weight < first.active / first.weight; ties keep the first draw
        if second.active * first.weight < first.active * second.weight:
            return second
        return first
