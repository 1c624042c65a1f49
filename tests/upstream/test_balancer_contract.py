"""What every balancing method promises the proxy, checked for each of them."""

from __future__ import annotations

import random

import pytest

from tests.upstream.helpers import servers
from ukproxy.upstream.balancing import BALANCING_METHODS, Balancer, make_balancer
from ukproxy.upstream.server import Server

KEYS = [b"10.0.%d.%d" % (i // 7, i * 37 % 256) for i in range(50)]  # addresses, so ip_hash hashes them too


def build(method: str, pool: list[Server]) -> Balancer:
    options = {"rng": random.Random(7)} if method == "random" else {}
    return make_balancer(method, pool, **options)


def picks(balancer: Balancer, now: float = 0.0, **kwargs: object) -> list[Server | None]:
    return [balancer.pick(key=key, now=now, **kwargs) for key in KEYS]  # type: ignore[arg-type]


@pytest.fixture(params=sorted(BALANCING_METHODS))
def method(request: pytest.FixtureRequest) -> str:
    return request.param


def test_all_six_methods_exist() -> None:
    assert {"round_robin", "least_conn", "least_time", "random", "hash", "ip_hash"} == BALANCING_METHODS


def test_unknown_method_or_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown balancing method 'fastest'"):
        make_balancer("fastest", servers(1))
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("round_robin", servers(1), consistent=True)


def test_every_server_gets_picked(method: str) -> None:
    pool = servers(1, 1, 1)
    assert set(picks(build(method, pool))) == set(pool)


def test_down_server_is_never_picked(method: str) -> None:
    a, b, c = pool = servers(1, 1, 1)
    b.down = True
    assert set(picks(build(method, pool))) == {a, c}


def test_failed_health_check_is_never_picked(method: str) -> None:
    a, b, c = pool = servers(1, 1, 1)
    a.health_ok = False
    assert set(picks(build(method, pool))) == {b, c}


def test_none_when_nothing_is_available(method: str) -> None:
    pool = servers(1, 1)
    for server in pool:
        server.down = True
    balancer = build(method, pool)
    assert set(picks(balancer)) == {None}
    assert build(method, []).pick(key=KEYS[0], now=0.0) is None


def test_backup_only_when_no_primary_is_available(method: str) -> None:
    a, b = primaries = servers(1, 1)
    spare = Server("10.77.0.99", 8080, backup=True, name="spare")
    balancer = build(method, [*primaries, spare])
    assert spare not in picks(balancer)
    a.down = True
    assert set(picks(balancer)) == {b}
    b.max_conns = 1
    b.connection_started()
    assert set(picks(balancer)) == {spare}
    b.connection_finished()
    assert set(picks(balancer)) == {b}


def test_backup_after_every_primary_was_tried(method: str) -> None:
    primaries = servers(1, 1)
    spare = Server("10.77.0.99", 8080, backup=True, name="spare")
    balancer = build(method, [*primaries, spare])
    assert set(picks(balancer, tried=primaries)) == {spare}
    assert set(picks(balancer, tried=[*primaries, spare])) == {None}


def test_tried_servers_are_never_returned(method: str) -> None:
    pool = servers(2, 1, 1, 3)
    balancer = build(method, pool)
    for key in KEYS:
        tried: list[Server] = []
        while (server := balancer.pick(key=key, tried=tried, now=0.0)) is not None:
            assert server not in tried
            tried.append(server)
        assert set(tried) == set(pool)  # a retry loop reaches every server, then gets None


def test_max_conns_is_respected(method: str) -> None:
    pool = servers(1, 1, 1, max_conns=2)
    balancer = build(method, pool)
    for _ in range(6):
        server = balancer.pick(key=KEYS[0], now=0.0)
        assert server is not None
        server.connection_started()
    assert [s.active for s in pool] == [2, 2, 2]
    assert balancer.pick(key=KEYS[0], now=0.0) is None
    pool[1].connection_finished()
    assert balancer.pick(key=KEYS[0], now=0.0) is pool[1]


def test_failed_server_is_skipped_then_tried_after_fail_timeout(method: str) -> None:
    a, b = pool = servers(1, 1, max_fails=2, fail_timeout=10.0)
    balancer = build(method, pool)
    a.record_failure(100.0)
    a.record_failure(101.0)
    assert set(picks(balancer, now=105.0)) == {b}
    assert set(picks(balancer, now=111.0)) == {b}
    # After fail_timeout a gets one trial request; a success brings it fully back.
    trial = [s for s in picks(balancer, now=111.5) if s is a]
    assert len(trial) == 1
    a.record_success()
    assert set(picks(balancer, now=112.0)) == {a, b}


def test_a_lone_server_is_not_taken_out_by_passive_health(method: str) -> None:
    (only,) = pool = servers(1, max_fails=1, fail_timeout=10.0)
    balancer = build(method, pool)
    only.record_failure(100.0)
    assert set(picks(balancer, now=100.5)) == {only}
    assert balancer.pick(key=KEYS[0], tried=[only], now=100.5) is None
    only.down = True
    assert set(picks(balancer, now=100.5)) == {None}


def test_set_servers_keeps_state_of_survivors(method: str) -> None:
    a, b, c = pool = servers(1, 1, 1, max_fails=1)
    balancer = build(method, pool)
    b.record_failure(100.0)
    a.connection_started()
    d = Server("10.77.0.20", 8080, name="d")
    balancer.set_servers([a, b, d])
    assert balancer.servers == [a, b, d]
    assert a.active == 1
    chosen = set(picks(balancer, now=101.0))
    assert b not in chosen and c not in chosen
    assert d in chosen
