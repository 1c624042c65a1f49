"""The HPACK encoder of our HTTP/2 responses: stateless and compiled, in place of the `hpack` library's.

docs/architecture.md, "HTTP/2". The library's encoder keeps a dynamic table and Huffman-codes literals, in
pure Python: about 5 µs of CPU per response head. Ours never adds to the dynamic table (RFC 7541 allows an
encoder that does not), so a head is the static table's full matches as indexed fields, and everything
else a literal without indexing (with the static table's index of the name where it has one), strings
sent plain: a few bytes more per head, far less work, and nothing a client's decoder must remember. The one
state is the table size the client allows (SETTINGS_HEADER_TABLE_SIZE), which h2 sets on the encoder: a
head after a change starts with a size update, as RFC 7541 4.2 asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack.table import HeaderTable

# The static table (RFC 7541 Appendix A), as the hpack library holds it: full matches and first names.
_FULL: Final[dict[tuple[bytes, bytes], int]] = {}
_NAMES: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FULL.setdefault((_name, _value), _index)
    _NAMES.setdefault(_name, _index)


def _integer(out: bytearray, value: int, prefix_bits: int, first: int) -> None:
    """RFC 7541 5.1: `value` with an N-bit prefix, its first byte's high bits `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        out.append(first | value)
        return
    out.append(first | limit)
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _string(out: bytearray, data: bytes) -> None:
    _integer(out, len(data), 7, 0)  # H = 0: not Huffman-coded
    out += data


class StatelessEncoder:
    """Stands in for hpack.Encoder on an h2 connection: h2 calls `encode` and sets `header_table_size`."""

    def __init__(self) -> None:
        self.header_table_size = 4096  # what the client allows (h2 sets it from the client's SETTINGS)
        self._announced = 4096  # the size our last head told the client we keep (we use none of it)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        out = bytearray()
        if self.header_table_size != self._announced:
            self._announced = self.header_table_size
            _integer(out, self._announced, 5, 0x20)  # dynamic table size update
        for name, value in headers:
            index = _FULL.get((name, value), 0)
            if index:
                _integer(out, index, 7, 0x80)  # indexed header field
                continue
            index = _NAMES.get(name, 0)
            _integer(out, index, 4, 0x00)  # literal without indexing; index 0: the name follows
            if not index:
                _string(out, name)
            _string(out, value)
        return bytes(out)
