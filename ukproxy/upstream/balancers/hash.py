"""``hash``: the same key goes to the same server.

``consistent=True`` (default) uses a ketama ring (see ``hash_ring``): if the key's server is
unavailable or tried, the next distinct server clockwise takes it, and membership changes
move only about 1/N of the keys. ``consistent=False`` is nginx's plain hash: the key's CRC32
modulo the total weight, rehashed up to 20 times when that server is unavailable, then
round robin. Without a key (``key=None``) both fall back to round robin.
The proxy computes the key (client address, a header, the URI) and passes its bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence

from ukproxy.upstream.balancers.hash_ring import DEFAULT_POINTS_PER_WEIGHT, HashRing
from ukproxy.upstream.balancers.rotating import RotatingBalancer
from ukproxy.upstream.balancers.weight_walk import server_at_weight, total_weight
from ukproxy.upstream.server import Server

REHASH_TRIES = 20  # as nginx, before giving up on the key and going round robin


def as_key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


class HashBalancer(RotatingBalancer):
    method = "hash"

    def __init__(
        self,
        servers: Sequence[Server],
        consistent: bool = True,
        points_per_weight: int = DEFAULT_POINTS_PER_WEIGHT,
    ) -> None:
        if points_per_weight < 1:
            raise ValueError(f"hash: points_per_weight must be >= 1, got {points_per_weight}")
        self.consistent = consistent
        self.points_per_weight = points_per_weight
        self.rings: dict[bool, HashRing] = {}
        super().__init__(servers)

    def _servers_changed(self) -> None:
        super()._servers_changed()
        if self.consistent:
            self.rings = {
                False: HashRing(self.primaries, self.points_per_weight),
                True: HashRing(self.backups, self.points_per_weight),
            }

    def _pick_in_tier(
        self,
        tier: list[Server],
        backup: bool,
        key: bytes | str | None,
        tried: Collection[Server],
        now: float,
    ) -> Server | None:
        if key is not None:
            key = as_key_bytes(key)
            if self.consistent:
                return self.rings[backup].find(key, tried, now)
            server = self._modulo_hash(tier, key, tried, now)
            if server is not None:
                return server
        return super()._pick_in_tier(tier, backup, key, tried, now)

    @staticmethod
    def _modulo_hash(tier: list[Server], key: bytes, tried: Collection[Server], now: float) -> Server | None:
        total = total_weight(tier)
        position = 0
        for attempt in range(REHASH_TRIES):
            # Each retry hashes the key with the attempt number, so it lands somewhere new but
            # the same for every request with this key.
            salted = key if attempt == 0 else b"%d:%b" % (attempt, key)
            position += zlib.crc32(salted) >> 1
            server = server_at_weight(tier, position % total)
            if server.available(now) and server not in tried:
                return server
        return None

    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        return self.rotation.choose(candidates)

