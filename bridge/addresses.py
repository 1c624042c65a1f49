"""IPv4 addresses for VMs on the backend subnet, and the MAC address each one gets."""

import heapq
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from bridge.errors import BridgeError


class AddressesExhausted(BridgeError):
    pass


class AddressInUse(BridgeError):
    pass


class AddressAllocator:
    """Hands out the lowest free host address of a subnet, from `first_offset` up.

    The network and broadcast addresses and `reserved` (the gateway) are never handed out.
    Addresses below `first_offset` are left for fixed use but may still be claimed.
    """

    def __init__(
        self,
        subnet: IPv4Network | str,
        reserved: Iterable[IPv4Address | str] = (),
        first_offset: int = 10,
    ) -> None:
        self.subnet = IPv4Network(subnet)
        if self.subnet.prefixlen > 30:
            raise ValueError(f"subnet {self.subnet} has no room for VMs (need a /30 or larger)")
        self.reserved = frozenset(IPv4Address(a) for a in reserved)
        for addr in self.reserved:
            if addr not in self.subnet:
                raise ValueError(f"reserved address {addr} is outside subnet {self.subnet}")
        self._base = int(self.subnet.network_address)
        self._last = int(self.subnet.broadcast_address) - 1
        self._first = self._base + max(first_offset, 1)
        if self._first > self._last:
            raise ValueError(f"first_offset {first_offset} is beyond the last host of {self.subnet}")
        # Addresses from the cursor up have never been handed out (claims there are skipped on the
        # way); those returned below it wait in a min-heap, so the lowest free one always comes first.
        self._cursor = self._first
        self._allocated: set[int] = set()
        self._released: list[int] = []  # may hold addresses claimed again since: skipped when popped

    def allocate(self) -> IPv4Address:
        """The lowest free address; raises AddressesExhausted when there is none."""
        while self._released:
            candidate = heapq.heappop(self._released)
            if candidate not in self._allocated:  # a claim may have taken it since it was released
                return self._take(candidate)
        while self._cursor <= self._last:
            candidate = self._cursor
            self._cursor += 1
            if candidate not in self._allocated and IPv4Address(candidate) not in self.reserved:
                return self._take(candidate)
        raise AddressesExhausted(
            f"no free address left in {self.subnet} ({len(self._allocated)} in use); use a larger subnet or fewer VMs"
        )

    def claim(self, addr: IPv4Address | str) -> IPv4Address:
        """Mark `addr` as in use, e.g. for a VM adopted at reconcile; raises AddressInUse if taken."""
        address = self._check_host(IPv4Address(addr))
        value = int(address)
        if value in self._allocated:
            raise AddressInUse(f"address {address} is already allocated")
        return self._take(value)

    def release(self, addr: IPv4Address | str) -> None:
        address = IPv4Address(addr)
        value = int(address)
        if value not in self._allocated:
            raise ValueError(f"address {address} is not allocated")
        self._allocated.remove(value)
        if self._first <= value < self._cursor:  # below first_offset: only ever claimed, never handed out
            heapq.heappush(self._released, value)

    def in_use(self) -> list[IPv4Address]:
        return [IPv4Address(v) for v in sorted(self._allocated)]

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, IPv4Address | str) and int(IPv4Address(addr)) in self._allocated

    def _check_host(self, address: IPv4Address) -> IPv4Address:
        if address not in self.subnet:
            raise ValueError(f"address {address} is outside subnet {self.subnet}")
        if address in (self.subnet.network_address, self.subnet.broadcast_address):
            raise ValueError(f"address {address} is the network or broadcast address of {self.subnet}")
        if address in self.reserved:
            raise ValueError(f"address {address} is reserved")
        return address

    def _take(self, value: int) -> IPv4Address:
        self._allocated.add(value)
        return IPv4Address(value)


def mac_for(addr: IPv4Address | str) -> str:
    """A stable, locally administered unicast MAC for `addr`: 52:54:00 and the address's last 3 bytes.

    Deterministic so a replaced VM at the same address keeps the gateway's ARP entry valid.
    """
    low = IPv4Address(addr).packed[1:]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in low)
