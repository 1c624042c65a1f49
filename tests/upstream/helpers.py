"""Small builders shared by the upstream tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ukproxy.upstream.server import Server


def servers(*weights: int, **options: object) -> list[Server]:
    """Servers named a, b, c, ... on 10.77.0.10, .11, ... with the given weights."""
    return [
        Server(f"10.77.0.{10 + i}", 8080, weight=w, name=chr(ord("a") + i), **options)  # type: ignore[arg-type]
        for i, w in enumerate(weights)
    ]


def count_picks(pick: Callable[[], Server | None], n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        server = pick()
        counts[server.name if server else "-"] += 1
    return counts
