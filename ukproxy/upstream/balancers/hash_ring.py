"""A ketama-style consistent hash ring.

Each server owns ``points_per_weight * weight`` points at positions taken from the MD5 of
``"{name}-{i}"`` (four 32-bit points per digest). A key hashes to a position; its server is
the owner of the first point clockwise. Points depend only on the server's name and weight,
so the ring is the same in every worker and across membership changes, and when a server
leaves only the keys that landed on its points move (about 1/N of them).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Collection, Iterator, Sequence
from functools import lru_cache

from ukproxy.upstream.server import Server

DEFAULT_POINTS_PER_WEIGHT = 160


@lru_cache(maxsize=1024)  # a VM pool rebuilds the ring on every membership change
def _points_of(label: str, count: int) -> tuple[int, ...]:
    return tuple(_generate_points(label, count))


def _generate_points(label: str, count: int) -> Iterator[int]:
    produced = 0
    block = 0
    while produced < count:
        digest = hashlib.md5(f"{label}-{block}".encode(), usedforsecurity=False).digest()
        for offset in range(0, 16, 4):
            if produced == count:
                return
            yield int.from_bytes(digest[offset : offset + 4], "little")
            produced += 1
        block += 1


def key_position(key: bytes) -> int:
    return int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest()[:4], "little")


class HashRing:
    def __init__(self, servers: Sequence[Server], points_per_weight: int = DEFAULT_POINTS_PER_WEIGHT) -> None:
        ring = sorted(
            # name, host, port break the (rare) ties of two servers on one position, whatever the input order
            (position, server.name, server.host, server.port, index)
            for index, server in enumerate(servers)
            for position in _points_of(server.name, points_per_weight * server.weight)
        )
        self.positions = [entry[0] for entry in ring]
        self.owners = [servers[entry[4]] for entry in ring]
        self.server_count = len(servers)

    def walk(self, key: bytes) -> Iterator[Server]:
        """Distinct servers in ring order, starting with the key's owner."""
        if not self.positions:
            return
        start = bisect.bisect_left(self.positions, key_position(key))
        seen: set[Server] = set()
        size = len(self.owners)
        for step in range(size):
            owner = self.owners[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.server_count:
                    return

    def owner(self, key: bytes) -> Server | None:
        return next(self.walk(key), None)

    def find(self, key: bytes, tried: Collection[Server], now: float) -> Server | None:
        """The first available, untried server clockwise from the key."""
        for server in self.walk(key):
            if server.available(now) and server not in tried:
                return server
        return None
