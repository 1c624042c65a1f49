"""The balancing methods by name: what the proxy and the config use.

Each method is one class in ``ukproxy.upstream.balancers``, all behind ``Balancer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ukproxy.upstream.balancers.base import Balancer
from ukproxy.upstream.balancers.hash import HashBalancer
from ukproxy.upstream.balancers.ip_hash import IpHashBalancer
from ukproxy.upstream.balancers.least_conn import LeastConnBalancer
from ukproxy.upstream.balancers.least_time import LeastTimeBalancer
from ukproxy.upstream.balancers.random_choice import RandomBalancer
from ukproxy.upstream.balancers.round_robin import RoundRobinBalancer
from ukproxy.upstream.server import Server

BALANCER_CLASSES: dict[str, type[Balancer]] = {
    cls.method: cls
    for cls in (
        RoundRobinBalancer,
        LeastConnBalancer,
        LeastTimeBalancer,
        RandomBalancer,
        HashBalancer,
        IpHashBalancer,
    )
}

BALANCING_METHODS: frozenset[str] = frozenset(BALANCER_CLASSES)


def make_balancer(method: str, servers: Sequence[Server], **options: Any) -> Balancer:
    """A new balancer of ``method`` over ``servers``; ``options`` are the method's own
    (least_time: ``alpha``; random: ``two``, ``rng``; hash: ``consistent``, ``points_per_weight``).
    Unknown methods and options raise ValueError naming them."""
    try:
        cls = BALANCER_CLASSES[method]
    except KeyError:
        known = ", ".join(sorted(BALANCING_METHODS))
        raise ValueError(f"unknown balancing method {method!r} (known: {known})") from None
    try:
        return cls(servers, **options)
    except TypeError as error:
        raise ValueError(f"balancing method {method!r}: bad options {sorted(options)}: {error}") from None


__all__ = ["BALANCING_METHODS", "Balancer", "Server", "make_balancer"]
