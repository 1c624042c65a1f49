"""least_time: expected wait from the EWMA of response times, times the queue ahead."""

from __future__ import annotations

import pytest

from tests.upstream.helpers import count_picks, servers
from ukproxy.upstream.balancers.least_time import least_time_score
from ukproxy.upstream.balancing import make_balancer


def test_unmeasured_servers_are_tried_first() -> None:
    fast, slow, new = pool = servers(1, 1, 1)
    balancer = make_balancer("least_time", pool)
    fast.record_success(0.001)
    slow.record_success(0.5)
    assert balancer.pick(now=0.0) is new
    new.connection_started()
    assert balancer.pick(now=0.0) is new  # still unmeasured: it outranks measured servers


def test_prefers_the_faster_server_after_samples() -> None:
    fast, slow = pool = servers(1, 1)
    balancer = make_balancer("least_time", pool)
    for _ in range(3):
        fast.record_success(0.010)
        slow.record_success(0.050)
    assert count_picks(lambda: balancer.pick(now=0.0), 20) == {"a": 20}


def test_open_connections_push_work_to_the_slower_server() -> None:
    fast, slow = pool = servers(1, 1)
    balancer = make_balancer("least_time", pool)
    fast.record_success(0.010)
    slow.record_success(0.030)
    opened = []
    for _ in range(8):
        server = balancer.pick(now=0.0)
        assert server is not None
        server.connection_started()
        opened.append(server.name)
    # 0.010 * (active + 1) passes 0.030 once the fast server has 3 open: then they share 3 to 1.
    assert opened[:3] == ["a", "a", "a"]
    assert (fast.active, slow.active) == (6, 2)


def test_weight_divides_the_expected_time() -> None:
    a, b = servers(3, 1)
    a.record_success(0.030)
    b.record_success(0.020)
    assert least_time_score(a) < least_time_score(b)


def test_ties_go_round_robin() -> None:
    balancer = make_balancer("least_time", servers(1, 1))
    for server in balancer.servers:
        server.record_success(0.02)
    assert count_picks(lambda: balancer.pick(now=0.0), 10) == {"a": 5, "b": 5}


def test_alpha_option_sets_how_fast_the_average_moves() -> None:
    a, _ = pool = servers(1, 1)
    make_balancer("least_time", pool, alpha=0.5)
    a.record_success(0.1)
    a.record_success(0.3)
    assert a.ewma_response_time == pytest.approx(0.2)
    with pytest.raises(ValueError):
        make_balancer("least_time", pool, alpha=0.0)


def test_a_recovered_server_wins_back_traffic() -> None:
    a, b = pool = servers(1, 1)
    balancer = make_balancer("least_time", pool, alpha=0.5)
    a.record_success(0.100)
    b.record_success(0.020)
    assert balancer.pick(now=0.0) is b
    for _ in range(4):
        a.record_success(0.005)
    assert balancer.pick(now=0.0) is a
