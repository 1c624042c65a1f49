"""A fixed-size hash table that every worker maps: the shared memory of limit_req and limit_conn zones.

nginx keeps a zone's state (a red-black tree of nodes) in shared memory under one mutex. Here a zone
is a file in the master's run directory that each worker opens and mmaps (the first to come creates it;
zero bytes are an empty table, so nobody has to initialise it). The table is set-associative: a key
hashes to one bucket of WAYS entries. An entry is a key field (first byte the key's length, then the
key, or 0xFF and a digest for a key too long to hold) followed by `cells` 8-byte numbers whose meaning
is the zone kind's (edge/limits.py); entries are whole multiples of 64 bytes.

Updates: every worker writes only cells of its own (limit_req: its slot's; limit_conn: one it owns, see
`own_cell`) and reads the others', so nobody waits on the request path (edge/limits.py says why). A bucket
is locked with an fcntl record lock on its byte range only to give a new key an entry (the kernel releases
a lock whose holder dies, so a killed worker can never wedge a zone). The file is named after the zone
and its geometry, so a reload that keeps a zone as it was keeps its state, as nginx keeps a zone of the
same name and size. docs/architecture.md, "The edge".
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import zlib
from collections.abc import Callable
from typing import Final

KEY_FIELD: Final = 48
WAYS: Final = 8
_LONG: Final = 0xFF
_PAD: Final = bytes(KEY_FIELD)


def entry_size(cells: int) -> int:
    return -(-(KEY_FIELD + 8 * cells) // 64) * 64


class SharedZone:
    """One zone's table. `path` None: a private table, for a process that runs alone."""

    def __init__(self, path: str | None, size: int, cells: int):
        self.path = path
        self.cells = cells
        self.entry = entry_size(cells)
        self.bucket_size = self.entry * WAYS
        self.buckets = max(16, size // self.bucket_size)
        length = self.buckets * self.bucket_size
        if path is None:
            self.fd = -1
            self.map = mmap.mmap(-1, length)
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if os.fstat(self.fd).st_size < length:
                os.ftruncate(self.fd, length)  # another worker may do the same at once: both only add zeros
            self.map = mmap.mmap(self.fd, length)

    @staticmethod
    def file_name(kind: str, name: str, size: int, cells: int) -> str:
        bucket = entry_size(cells) * WAYS
        return f"limit_{kind}-{name}-{max(16, size // bucket)}x{bucket}.zone"

    def entry_key(self, key: bytes) -> bytes:
        """The key as an entry holds it."""
        n = len(key)
        if n < KEY_FIELD:
            return bytes((n,)) + key + _PAD[n + 1:]
        return bytes((_LONG,)) + hashlib.blake2b(key, digest_size=KEY_FIELD - 1).digest()

    def bucket(self, entry_key: bytes) -> int:
        """The offset of the key's bucket."""
        return zlib.crc32(entry_key) % self.buckets * self.bucket_size

    def lock(self, bucket: int) -> None:
        if self.fd >= 0:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, self.bucket_size, bucket)

    def unlock(self, bucket: int) -> None:
        if self.fd >= 0:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, self.bucket_size, bucket)

    def find(self, entry_key: bytes, bucket: int) -> int:
        """The offset of the key's entry in its bucket, or -1."""
        end = bucket + self.bucket_size
        at = self.map.find(entry_key, bucket, end)
        while at >= 0 and (at - bucket) % self.entry:  # the bytes matched across two entries: look further
            at = self.map.find(entry_key, at + 1, end)
        return at

    def entries(self, bucket: int) -> range:
        return range(bucket, bucket + self.bucket_size, self.entry)

    def locate(self, key: bytes, victim: Callable[[range], int]) -> int:
        """The entry holding `key`; one is entered when its bucket lacks it, under the bucket's lock (another
        worker may be adding it too): an unused entry, else `victim(entries)` (-1: none may go, and -1 here)."""
        entry_key = self.entry_key(key)
        bucket = self.bucket(entry_key)
        at = self.find(entry_key, bucket)
        if at >= 0:
            return at
        self.lock(bucket)
        try:
            at = self.find(entry_key, bucket)
            if at >= 0:
                return at
            entries = self.entries(bucket)
            m = self.map
            at = next((a for a in entries if m[a] == 0), -1)
            if at < 0:
                at = victim(entries)
            if at >= 0:
                self.take(at, entry_key)
            return at
        finally:
            self.unlock(bucket)

    def take(self, at: int, entry_key: bytes) -> None:
        """Entry `at` now holds `entry_key`, its cells zero."""
        self.map[at:at + self.entry] = entry_key + bytes(self.entry - KEY_FIELD)

    def own_cell(self) -> int:
        """A cell index for this process alone, for as long as it lives (limit_conn), or -1 if all are taken.

        Owning cell i is holding an fcntl lock on byte `length + i` (past the table: a lock may cover bytes
        a file does not have), which the kernel drops when the owner dies. Every cell nobody owns is zeroed
        on the way, so what a killed worker held is forgotten as soon as the next worker starts."""
        if self.fd < 0:
            return 0
        end = self.buckets * self.bucket_size
        mine = -1
        for cell in range(self.cells):
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, end + cell)
            except OSError:
                continue  # another live process owns it
            self._zero_cell(cell)
            if mine < 0:
                mine = cell  # kept locked: ours
            else:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, end + cell)
        return mine

    def _zero_cell(self, cell: int) -> None:
        m = self.map
        zero = bytes(8)
        offset = KEY_FIELD + 8 * cell
        for at in range(0, self.buckets * self.bucket_size, self.entry):
            if m[at]:
                m[at + offset:at + offset + 8] = zero

    def close(self) -> None:
        self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_opened: dict[str, SharedZone] = {}


def open_zone(kind: str, name: str, size: int, cells: int) -> SharedZone:
    """This worker's mapping of a zone (one per zone however many listeners and routes use it). The run
    directory comes from the master (UKPROXY_RUN_DIR); without one the zone is private to this process."""
    run_dir = os.environ.get("UKPROXY_RUN_DIR")
    file_name = SharedZone.file_name(kind, name, size, cells)
    path = os.path.join(run_dir, file_name) if run_dir else None
    cache_key = path or f"private:{file_name}"
    zone = _opened.get(cache_key)
    if zone is None:
        zone = _opened[cache_key] = SharedZone(path, size, cells)
    return zone
