"""random: weighted random choice, plain or with the power of two choices."""

from __future__ import annotations

import random

import pytest

from tests.upstream.helpers import count_picks, servers
from ukproxy.upstream.balancing import make_balancer


@pytest.mark.parametrize("two", [False, True])
def test_idle_servers_are_drawn_in_weight_proportion(two: bool) -> None:
    balancer = make_balancer("random", servers(5, 3, 2), two=two, rng=random.Random(1))
    counts = count_picks(lambda: balancer.pick(now=0.0), 10_000)
    # Expected 5000/3000/2000; the standard deviation is about 50, so +-300 never fails by chance.
    for name, expected in (("a", 5000), ("b", 3000), ("c", 2000)):
        assert abs(counts[name] - expected) < 300, counts


def test_two_choices_takes_the_less_loaded_of_two() -> None:
    busy, _ = pool = servers(1, 1)
    for _ in range(3):
        busy.connection_started()
    balancer = make_balancer("random", pool, rng=random.Random(3))
    assert count_picks(lambda: balancer.pick(now=0.0), 50) == {"b": 50}
    plain = make_balancer("random", pool, two=False, rng=random.Random(3))
    assert set(count_picks(lambda: plain.pick(now=0.0), 50)) == {"a", "b"}


def test_a_single_available_server_is_returned() -> None:
    a, b = pool = servers(1, 1)
    b.down = True
    balancer = make_balancer("random", pool, rng=random.Random(0))
    assert {balancer.pick(now=0.0) for _ in range(10)} == {a}


def busiest_server_peak(two: bool, seed: int) -> int:
    """Open connections that close in random order; the most any server ever held at once."""
    pool = servers(*([1] * 10))
    balancer = make_balancer("random", pool, two=two, rng=random.Random(seed))
    closing = random.Random(seed + 1000)
    open_connections = []
    peak = 0
    for _ in range(5000):
        server = balancer.pick(now=0.0)
        assert server is not None
        server.connection_started()
        open_connections.append(server)
        if len(open_connections) > 50:  # about 5 per server in steady state
            done = open_connections.pop(closing.randrange(len(open_connections)))
            done.connection_finished()
        peak = max(peak, max(s.active for s in pool))
    return peak


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_choices_spreads_load_better_than_plain_random(seed: int) -> None:
    assert busiest_server_peak(two=True, seed=seed) < busiest_server_peak(two=False, seed=seed)
