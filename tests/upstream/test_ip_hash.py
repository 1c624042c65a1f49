"""ip_hash: nginx's hash of the client's /24 (IPv4) or whole address (IPv6)."""

from __future__ import annotations

from collections import Counter

from tests.upstream.helpers import count_picks, servers
from ukproxy.upstream.balancing import make_balancer
from ukproxy.upstream.server import Server

NETWORKS = [f"{10 + i // 250}.{i % 250}.{i * 7 % 256}" for i in range(3000)]  # distinct /24 prefixes


def pick(balancer: object, address: str | bytes) -> Server | None:
    key = address if isinstance(address, bytes) else address.encode()
    return balancer.pick(key=key, now=0.0)  # type: ignore[attr-defined]


def test_same_slash_24_goes_to_the_same_server() -> None:
    balancer = make_balancer("ip_hash", servers(1, 1, 1, 1))
    for network in NETWORKS[:200]:
        chosen = {pick(balancer, f"{network}.{host}") for host in (1, 77, 254)}
        assert len(chosen) == 1


def test_networks_spread_by_weight() -> None:
    balancer = make_balancer("ip_hash", servers(1, 1, 2))
    counts = Counter(pick(balancer, f"{n}.1").name for n in NETWORKS)  # type: ignore[union-attr]
    for name, expected in (("a", 750), ("b", 750), ("c", 1500)):
        assert abs(counts[name] - expected) < 0.2 * expected, counts


def test_str_bytes_and_ipv4_mapped_ipv6_are_one_client() -> None:
    balancer = make_balancer("ip_hash", servers(1, 1, 1, 1, 1))
    for network in NETWORKS[:100]:
        address = f"{network}.9"
        expected = pick(balancer, address)
        assert balancer.pick(key=address, now=0.0) is expected  # type: ignore[arg-type]
        assert pick(balancer, f"::ffff:{address}") is expected


def test_ipv6_hashes_the_whole_address() -> None:
    balancer = make_balancer("ip_hash", servers(1, 1, 1, 1))
    chosen = {pick(balancer, f"2001:db8::{i:x}") for i in range(200)}
    assert len(chosen) == 4  # neighbours in one /64 are spread, unlike IPv4 /24s
    assert all(pick(balancer, f"2001:db8::{i:x}") is pick(balancer, f"2001:db8::{i:x}") for i in range(50))


def test_unavailable_server_rehashes_only_its_clients() -> None:
    pool = servers(1, 1, 1)
    balancer = make_balancer("ip_hash", pool)
    before = {n: pick(balancer, f"{n}.1") for n in NETWORKS}
    pool[0].down = True
    during = {n: pick(balancer, f"{n}.1") for n in NETWORKS}
    assert all(during[n] is before[n] for n in NETWORKS if before[n] is not pool[0])
    assert {during[n] for n in NETWORKS if before[n] is pool[0]} == {pool[1], pool[2]}


def test_retry_of_one_client_is_deterministic_and_avoids_tried() -> None:
    pool = servers(1, 1, 1)
    balancer = make_balancer("ip_hash", pool)
    first = pick(balancer, "192.0.2.10")
    assert first is not None
    retry = balancer.pick(key=b"192.0.2.10", tried=[first], now=0.0)
    assert retry is not None and retry is not first
    assert balancer.pick(key=b"192.0.2.99", tried=[first], now=0.0) is retry


def test_key_that_is_no_address_goes_round_robin() -> None:
    balancer = make_balancer("ip_hash", servers(1, 1))
    assert count_picks(lambda: balancer.pick(key=b"unix:", now=0.0), 10) == {"a": 5, "b": 5}
    assert count_picks(lambda: balancer.pick(now=0.0), 10) == {"a": 5, "b": 5}
