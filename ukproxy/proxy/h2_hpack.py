"""HPACK for our HTTP/2 connections, compiled, in place of the `hpack` library's pure Python (h2 takes both).

docs/architecture.md, "HTTP/2". The library's encoder keeps a dynamic table and Huffman-codes literals, in
pure Python: about 5 µs of CPU per response head. Ours never adds to the dynamic table (RFC 7541 allows an
encoder that does not), so a head is the static table's full matches as indexed fields, and everything
else a literal without indexing (with the static table's index of the name where it has one), strings
sent plain: a few bytes more per head, far less work, and nothing a client's decoder must remember. The one
state is the table size the client allows (SETTINGS_HEADER_TABLE_SIZE), which h2 sets on the encoder: a
head after a change starts with a size update, as RFC 7541 4.2 asks.

The decoder is RFC 7541's with its dynamic table, bounded as h2 configures it (`max_allowed_table_size`:
our SETTINGS_HEADER_TABLE_SIZE; `max_header_list_size`), and raises hpack's exceptions, which h2 turns
into connection errors. Huffman-coded strings go to hpack's own decoding table: a client that indexes its
repeated fields (every browser, h2load, curl) sends them as one byte each from the second request on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack.exceptions import HPACKDecodingError, InvalidTableIndexError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

# The static table (RFC 7541 Appendix A), as the hpack library holds it: full matches and first names.
_FULL: Final[dict[tuple[bytes, bytes], int]] = {}
_NAMES: Final[dict[bytes, int]] = {}
_STATIC: Final[list[tuple[bytes, bytes]]] = [(name, value) for name, value in HeaderTable.STATIC_TABLE]
for _index, (_name, _value) in enumerate(_STATIC, start=1):
    _FULL.setdefault((_name, _value), _index)
    _NAMES.setdefault(_name, _index)
_ENTRY_OVERHEAD: Final = 32  # RFC 7541 4.1: an entry's size is its name's and value's lengths plus 32


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


class Decoder:
    """Stands in for hpack.Decoder on an h2 connection: h2 calls `decode(block, raw=True)` and sets the two bounds."""

    def __init__(self) -> None:
        self.max_allowed_table_size = 4096  # our SETTINGS_HEADER_TABLE_SIZE: the most a size update may ask
        self.max_header_list_size = 65536
        self.header_table_size = 4096  # the dynamic table's current bound, as the client last set it
        self._table: list[tuple[bytes, bytes]] = []  # newest first: index 62 is _table[0]
        self._table_bytes = 0

    def decode(self, data: bytes, raw: bool = True) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        size = 0
        pos = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed header field
                index, pos = _read_integer(data, pos, 7)
                header = self._entry(index)
            elif first & 0x40:  # literal with incremental indexing
                index, pos = _read_integer(data, pos, 6)
                header, pos = self._literal(data, pos, index)
                self._add(header)
            elif first & 0x20:  # dynamic table size update
                if headers:
                    raise HPACKDecodingError("table size update after the first header field")
                new_size, pos = _read_integer(data, pos, 5)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError(f"table size {new_size} over our {self.max_allowed_table_size}")
                self.header_table_size = new_size
                self._evict()
                continue
            else:  # literal without indexing (0000) or never indexed (0001)
                index, pos = _read_integer(data, pos, 4)
                header, pos = self._literal(data, pos, index)
            size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
            if size > self.max_header_list_size:
                raise OversizedHeaderListError(f"header list over {self.max_header_list_size} bytes")
            headers.append(header)
        return headers

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= len(_STATIC):
            return _STATIC[index - 1]
        dynamic = index - len(_STATIC) - 1
        if index == 0 or dynamic >= len(self._table):
            raise InvalidTableIndexError(f"no table entry {index}")
        return self._table[dynamic]

    def _literal(self, data: bytes, pos: int, index: int) -> tuple[tuple[bytes, bytes], int]:
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _read_string(data, pos)
        value, pos = _read_string(data, pos)
        return (name, value), pos

    def _add(self, header: tuple[bytes, bytes]) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        if size > self.header_table_size:  # larger than the table: it empties the table (RFC 7541 4.4)
            self._table.clear()
            self._table_bytes = 0
            return
        self._table.insert(0, header)
        self._table_bytes += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._table_bytes > self.header_table_size:
            name, value = table.pop()
            self._table_bytes -= len(name) + len(value) + _ENTRY_OVERHEAD


_MAX_INTEGER_BYTES: Final = 4  # past 2^28 no length or index of ours can be meant: refused, not computed


def _read_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 5.1: the integer at `pos` with an N-bit prefix, and the position after it."""
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    for _ in range(_MAX_INTEGER_BYTES):
        if pos >= len(data):
            raise HPACKDecodingError("integer cut off")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise HPACKDecodingError("integer too long")


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise HPACKDecodingError("string cut off")
    huffman = data[pos] & 0x80
    length, pos = _read_integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("string cut off")
    text = data[pos:end]
    return (decode_huffman(text) if huffman else text), end
