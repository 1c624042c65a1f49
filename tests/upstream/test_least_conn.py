"""least_conn: fewest active connections per weight, ties by smooth weighted round robin."""

from __future__ import annotations

from tests.upstream.helpers import count_picks, servers
from ukproxy.upstream.balancing import make_balancer


def test_prefers_the_least_loaded() -> None:
    a, b, c = pool = servers(1, 1, 1)
    balancer = make_balancer("least_conn", pool)
    for server, n in ((a, 3), (b, 1), (c, 2)):
        for _ in range(n):
            server.connection_started()
    assert balancer.pick(now=0.0) is b
    b.connection_started()
    b.connection_started()
    assert balancer.pick(now=0.0) is c


def test_load_is_compared_per_unit_of_weight() -> None:
    heavy, light = pool = servers(4, 1)
    balancer = make_balancer("least_conn", pool)
    for _ in range(3):
        heavy.connection_started()
    light.connection_started()
    assert balancer.pick(now=0.0) is heavy  # 3/4 < 1/1
    heavy.connection_started()
    heavy.connection_started()
    assert balancer.pick(now=0.0) is light  # 5/4 > 1/1


def test_connections_that_stay_open_fill_servers_in_weight_proportion() -> None:
    pool = servers(3, 2, 1)
    balancer = make_balancer("least_conn", pool)
    for _ in range(60):
        server = balancer.pick(now=0.0)
        assert server is not None
        server.connection_started()
    assert [s.active for s in pool] == [30, 20, 10]


def test_ties_go_smooth_weighted_round_robin() -> None:
    balancer = make_balancer("least_conn", servers(5, 1, 1))
    # Nothing is ever open, so every pick is a tie among all three.
    assert "".join(balancer.pick(now=0.0).name for _ in range(7)) == "aabacaa"  # type: ignore[union-attr]


def test_short_requests_spread_by_weight() -> None:
    balancer = make_balancer("least_conn", servers(2, 1))
    assert count_picks(lambda: balancer.pick(now=0.0), 300) == {"a": 200, "b": 100}
