from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.addresses import AddressAllocator, AddressesExhausted, AddressInUse, mac_for

GATEWAY = IPv4Address("10.77.0.1")


def allocator(subnet: str = "10.77.0.0/24", **kwargs: object) -> AddressAllocator:
    return AddressAllocator(subnet, reserved=(GATEWAY,), **kwargs)  # type: ignore[arg-type]


def test_allocation_starts_at_dot_ten_and_ascends() -> None:
    alloc = allocator()
    assert [str(alloc.allocate()) for _ in range(3)] == ["10.77.0.10", "10.77.0.11", "10.77.0.12"]


def test_small_subnet_runs_out_with_a_clear_error_and_never_hands_out_broadcast() -> None:
    alloc = allocator("10.77.0.0/28")  # hosts .1-.14; from .10 that is five
    got = [alloc.allocate() for _ in range(5)]
    assert got == [IPv4Address(f"10.77.0.{i}") for i in range(10, 15)]
    with pytest.raises(AddressesExhausted, match=r"10\.77\.0\.0/28"):
        alloc.allocate()


def test_first_offset_one_still_skips_the_reserved_gateway() -> None:
    alloc = allocator("10.77.0.0/29", first_offset=1)
    got = {alloc.allocate() for _ in range(5)}
    assert got == {IPv4Address(f"10.77.0.{i}") for i in range(2, 7)}
    with pytest.raises(AddressesExhausted):
        alloc.allocate()


def test_released_address_is_reused_lowest_first() -> None:
    alloc = allocator()
    a, b, c = alloc.allocate(), alloc.allocate(), alloc.allocate()
    alloc.release(c)
    alloc.release(a)
    assert alloc.allocate() == a
    assert alloc.allocate() == c
    assert alloc.allocate() == IPv4Address("10.77.0.13")
    assert b in alloc


def test_released_high_claim_does_not_jump_ahead_of_lower_free_addresses() -> None:
    alloc = allocator()
    alloc.claim("10.77.0.50")
    alloc.release("10.77.0.50")
    assert alloc.allocate() == IPv4Address("10.77.0.10")


def test_claimed_address_is_skipped_by_allocate() -> None:
    alloc = allocator()
    alloc.claim("10.77.0.11")
    assert [alloc.allocate(), alloc.allocate()] == [IPv4Address("10.77.0.10"), IPv4Address("10.77.0.12")]


def test_claim_twice_or_after_allocate_is_refused() -> None:
    alloc = allocator()
    first = alloc.allocate()
    with pytest.raises(AddressInUse):
        alloc.claim(first)
    alloc.claim("10.77.0.200")
    with pytest.raises(AddressInUse):
        alloc.claim("10.77.0.200")


@pytest.mark.parametrize("bad", ["10.77.0.0", "10.77.0.255", "10.77.0.1", "10.78.0.5"])
def test_claim_refuses_network_broadcast_gateway_and_outsiders(bad: str) -> None:
    with pytest.raises(ValueError):
        allocator().claim(bad)


def test_claim_below_first_offset_is_allowed_but_not_handed_out_after_release() -> None:
    alloc = allocator()
    alloc.claim("10.77.0.5")
    alloc.release("10.77.0.5")
    assert alloc.allocate() == IPv4Address("10.77.0.10")


def test_release_of_a_free_address_is_an_error() -> None:
    with pytest.raises(ValueError, match="not allocated"):
        allocator().release("10.77.0.10")


@given(st.lists(st.tuples(st.sampled_from(["alloc", "release", "claim"]), st.integers(0, 15)), max_size=60))
def test_allocator_matches_a_simple_model(ops: list[tuple[str, int]]) -> None:
    """Lowest free wins, no duplicates, never network/broadcast/gateway, whatever the order of operations."""
    subnet = IPv4Network("10.77.0.0/28")
    alloc = AddressAllocator(subnet, reserved=(GATEWAY,), first_offset=2)
    handable = [IPv4Address(f"10.77.0.{i}") for i in range(2, 15)]
    model: set[IPv4Address] = set()
    for op, n in ops:
        addr = IPv4Address(f"10.77.0.{n}")
        if op == "alloc":
            free = [a for a in handable if a not in model]
            if free:
                assert alloc.allocate() == free[0]
                model.add(free[0])
            else:
                with pytest.raises(AddressesExhausted):
                    alloc.allocate()
        elif op == "release" and addr in model:
            alloc.release(addr)
            model.discard(addr)
        elif op == "claim" and addr in handable and addr not in model:
            alloc.claim(addr)
            model.add(addr)
        assert set(alloc.in_use()) == model


def test_mac_is_deterministic_locally_administered_unicast_and_distinct() -> None:
    assert mac_for("10.77.0.10") == "52:54:00:4d:00:0a"
    assert mac_for(IPv4Address("10.77.0.10")) == mac_for("10.77.0.10")
    first_octet = int(mac_for("10.77.0.10").split(":")[0], 16)
    assert first_octet & 0b10  # locally administered
    assert not first_octet & 0b01  # unicast
    macs = {mac_for(a) for a in IPv4Network("10.77.0.0/24")}
    assert len(macs) == 256
