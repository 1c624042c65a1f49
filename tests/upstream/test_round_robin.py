"""round_robin: nginx's smooth weighted round robin."""

from __future__ import annotations

import pytest

from tests.upstream.helpers import count_picks, servers
from ukproxy.upstream.balancing import make_balancer


def names(balancer: object, n: int, now: float = 0.0) -> str:
    return "".join(balancer.pick(now=now).name for _ in range(n))  # type: ignore[attr-defined]


def test_nginx_sequence_for_weights_5_1_1() -> None:
    balancer = make_balancer("round_robin", servers(5, 1, 1))
    assert names(balancer, 14) == "aabacaa" * 2


def test_equal_weights_take_turns() -> None:
    balancer = make_balancer("round_robin", servers(1, 1, 1))
    assert names(balancer, 9) == "abcabcabc"


@pytest.mark.parametrize("weights", [(3, 2, 1), (10, 1), (1, 4, 4, 7)])
def test_every_cycle_matches_weights_exactly(weights: tuple[int, ...]) -> None:
    balancer = make_balancer("round_robin", servers(*weights))
    cycles = 5
    counts = count_picks(lambda: balancer.pick(now=0.0), sum(weights) * cycles)
    assert counts == {chr(ord("a") + i): w * cycles for i, w in enumerate(weights)}


def test_heavy_server_is_spread_not_bunched() -> None:
    balancer = make_balancer("round_robin", servers(4, 1))
    assert names(balancer, 5) == "aabaa"


def test_unavailable_and_tried_are_skipped() -> None:
    a, b, c = pool = servers(1, 1, 1)
    balancer = make_balancer("round_robin", pool)
    b.down = True
    assert {balancer.pick(now=0.0) for _ in range(10)} == {a, c}
    assert balancer.pick(tried=[a], now=0.0) is c
    assert balancer.pick(tried={a, c}, now=0.0) is None


def test_failed_server_recovers_weight_gradually() -> None:
    a, _ = pool = servers(5, 5, max_fails=1, fail_timeout=10.0)
    balancer = make_balancer("round_robin", pool)
    a.record_failure(0.0)
    assert a.effective_weight == 0
    assert names(balancer, 5, now=5.0) == "bbbbb"  # inside fail_timeout: a is out
    # After fail_timeout a takes part again, its weight climbing one step per pick, so its
    # single trial request comes only after a few picks of b; then it is out until it succeeds.
    assert names(balancer, 6, now=20.0) == "bbbabb"
    a.record_success()
    assert a.fails == 0
    count_picks(lambda: balancer.pick(now=20.0), 10)
    assert a.effective_weight == 5
    counts = count_picks(lambda: balancer.pick(now=20.0), 100)
    assert counts == {"a": 50, "b": 50}
