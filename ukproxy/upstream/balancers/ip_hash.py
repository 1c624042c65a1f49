"""``ip_hash``: clients of one network go to one server, as nginx's ip_hash.

The key is the client address as text (``bytes`` or ``str``). An IPv4 client is hashed on
its first three octets (its /24, so a client moving within a NAT pool keeps its server),
an IPv6 client on the whole address; IPv4-mapped IPv6 counts as IPv4. The hash is nginx's
(``h = (h * 113 + octet) % 6271`` from 89) modulo the total weight; when that server is
unavailable or tried the hash continues over the octets again, up to 20 times, and then
the request goes round robin. A key that is not an address (a Unix socket peer, None)
goes round robin too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from functools import lru_cache

from ukproxy.upstream.balancers.rotating import RotatingBalancer
from ukproxy.upstream.balancers.weight_walk import server_at_weight, total_weight
from ukproxy.upstream.server import Server

REHASH_TRIES = 20


@lru_cache(maxsize=4096)  # a worker sees the same clients again and again
def hashed_octets(address: bytes | str) -> bytes | None:
    """The part of the client address that ip_hash hashes, or None if it is no address."""
    try:
        text = address.decode("ascii") if isinstance(address, bytes) else address
        ip = ipaddress.ip_address(text.strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    packed = ip.packed
    return packed[:3] if ip.version == 4 else packed


class IpHashBalancer(RotatingBalancer):
    method = "ip_hash"

    def _pick_in_tier(
        self,
        tier: list[Server],
        backup: bool,
        key: bytes | str | None,
        tried: Collection[Server],
        now: float,
    ) -> Server | None:
        octets = hashed_octets(key) if key is not None else None
        if octets is not None:
            total = total_weight(tier)
            h = 89
            for _ in range(REHASH_TRIES):
                for octet in octets:
                    h = (h * 113 + octet) % 6271
                server = server_at_weight(tier, h % total)
                if server.available(now) and server not in tried:
                    return server
        return super()._pick_in_tier(tier, backup, key, tried, now)

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        return self.rotation.choose(candidates)
