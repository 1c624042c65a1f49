"""hash: consistent (ketama ring) and plain modulo hashing of a request key."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.upstream.helpers import servers
from ukproxy.upstream.balancing import Balancer, make_balancer
from ukproxy.upstream.server import Server

KEYS = [f"/users/{i}/profile".encode() for i in range(20_000)]


def owners(balancer: Balancer, keys: list[bytes] = KEYS) -> dict[bytes, Server | None]:
    return {key: balancer.pick(key=key, now=0.0) for key in keys}


def shares(assignment: dict[bytes, Server | None]) -> Counter[str]:
    return Counter(server.name for server in assignment.values() if server is not None)


@pytest.mark.parametrize("consistent", [True, False])
def test_same_key_same_server(consistent: bool) -> None:
    balancer = make_balancer("hash", servers(1, 1, 1, 1), consistent=consistent)
    first = owners(balancer, KEYS[:500])
    assert owners(balancer, KEYS[:500]) == first
    assert len(set(first.values())) == 4


@pytest.mark.parametrize("consistent", [True, False])
def test_keys_spread_by_weight(consistent: bool) -> None:
    counts = shares(owners(make_balancer("hash", servers(1, 1, 2), consistent=consistent)))
    # Expected 5000/5000/10000. The ring's own unevenness with 160 points per weight is a few
    # percent; 15% bands leave room for it without letting a broken weighting through.
    for name, expected in (("a", 5000), ("b", 5000), ("c", 10_000)):
        assert abs(counts[name] - expected) < 0.15 * expected, counts


def test_str_and_bytes_keys_agree() -> None:
    balancer = make_balancer("hash", servers(1, 1, 1))
    assert all(balancer.pick(key=k.decode(), now=0.0) is balancer.pick(key=k, now=0.0) for k in KEYS[:200])


def test_ring_is_independent_of_list_order_and_of_rebuilds() -> None:
    pool = servers(1, 2, 1, 1)
    balancer = make_balancer("hash", pool)
    before = owners(balancer)
    balancer.set_servers(list(reversed(pool)))
    assert owners(balancer) == before
    # Another worker with its own Server objects of the same names maps keys the same way.
    twin = make_balancer("hash", servers(1, 2, 1, 1))
    assert {k: s.name for k, s in owners(twin).items()} == {k: s.name for k, s in before.items()}  # type: ignore[union-attr]


def test_removing_a_server_moves_only_its_keys() -> None:
    pool = servers(1, 1, 1, 1, 1)
    balancer = make_balancer("hash", pool)
    before = owners(balancer)
    leaving = pool[2]
    balancer.set_servers([s for s in pool if s is not leaving])
    after = owners(balancer)
    moved = [k for k in KEYS if after[k] is not before[k]]
    assert all(before[k] is leaving for k in moved)
    assert all(after[k] is not leaving for k in KEYS)
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.05
    # The orphaned keys spread over the remaining servers rather than all landing on one.
    assert len({after[k] for k in moved}) == 4


def test_adding_a_server_takes_about_its_share_from_the_others() -> None:
    pool = servers(1, 1, 1, 1)
    balancer = make_balancer("hash", pool)
    before = owners(balancer)
    newcomer = Server("10.77.0.30", 8080, name="e")
    balancer.set_servers([*pool, newcomer])
    after = owners(balancer)
    moved = [k for k in KEYS if after[k] is not before[k]]
    assert all(after[k] is newcomer for k in moved)
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.05


def test_unavailable_server_hands_its_keys_to_ring_neighbours_only() -> None:
    pool = servers(1, 1, 1, 1)
    balancer = make_balancer("hash", pool)
    before = owners(balancer)
    pool[0].down = True
    during = owners(balancer)
    assert all(during[k] is before[k] for k in KEYS if before[k] is not pool[0])
    pool[0].down = False
    assert owners(balancer) == before  # the keys come back when it does


def test_retry_walks_the_ring_to_the_next_distinct_server() -> None:
    pool = servers(1, 1, 1)
    balancer = make_balancer("hash", pool)
    key = KEYS[0]
    first = balancer.pick(key=key, now=0.0)
    second = balancer.pick(key=key, tried=[first], now=0.0)  # type: ignore[list-item]
    assert second is not None and second is not first
    assert balancer.pick(key=key, tried=[first], now=0.0) is second  # retries of one key agree


def test_modulo_hash_rehashes_when_the_server_is_unavailable() -> None:
    pool = servers(1, 1, 1)
    balancer = make_balancer("hash", pool, consistent=False)
    before = owners(balancer, KEYS[:3000])
    pool[1].down = True
    during = owners(balancer, KEYS[:3000])
    assert all(during[k] is before[k] for k in during if before[k] is not pool[1])
    rehomed = Counter(during[k].name for k in during if before[k] is pool[1])  # type: ignore[union-attr]
    assert set(rehomed) == {"a", "c"}


def test_without_a_key_it_goes_round_robin() -> None:
    balancer = make_balancer("hash", servers(2, 1))
    assert "".join(balancer.pick(now=0.0).name for _ in range(6)) == "abaaba"  # type: ignore[union-attr]


def test_bad_option_is_refused() -> None:
    with pytest.raises(ValueError):
        make_balancer("hash", servers(1), points_per_weight=0)
