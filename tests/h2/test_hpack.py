"""Our HPACK (proxy/h2_hpack.py) against the hpack library's: whatever its encoder writes, across a
connection's worth of header blocks (its dynamic table, Huffman, size updates), we decode as its decoder
does; what we encode it decodes; and hostile blocks end in hpack's own errors."""

from __future__ import annotations

import hpack
import pytest
from hpack.exceptions import HPACKDecodingError, InvalidTableIndexError, InvalidTableSizeError, OversizedHeaderListError
from hypothesis import given, settings
from hypothesis import strategies as st

from ukproxy.proxy.h2_hpack import Decoder, StatelessEncoder

names = st.sampled_from([b":path", b":authority", b"user-agent", b"cookie", b"x-a", b"x-long-custom-name", b"accept"])
values = st.binary(max_size=300)
header_lists = st.lists(st.tuples(names, values), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(st.tuples(header_lists, st.booleans(), st.sampled_from([None, 0, 256, 4096])), max_size=8))
def test_decodes_what_hpack_encodes(blocks: list[tuple[list[tuple[bytes, bytes]], bool, int | None]]) -> None:
    encoder, theirs, ours = hpack.Encoder(), hpack.Decoder(), Decoder()
    for headers, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size  # the next block starts with a size update
        block = encoder.encode(headers, huffman=huffman)
        assert ours.decode(block) == theirs.decode(block, raw=True) == headers


@settings(max_examples=100, deadline=None)
@given(headers=header_lists, table_size=st.sampled_from([4096, 0, 100]))
def test_hpack_decodes_what_we_encode(headers: list[tuple[bytes, bytes]], table_size: int) -> None:
    encoder, decoder = StatelessEncoder(), hpack.Decoder()
    decoder.max_allowed_table_size = 4096
    for _ in range(2):
        encoder.header_table_size = table_size
        assert decoder.decode(encoder.encode(headers), raw=True) == headers


@pytest.mark.parametrize(("block", "error"), [
    (b"\x80", InvalidTableIndexError),  # index 0
    (b"\xbf\x01", InvalidTableIndexError),  # index 64, an empty dynamic table
    (b"\x3f\xe1\x7f", InvalidTableSizeError),  # a size update past what we allow
    (b"\x82\x20", HPACKDecodingError),  # a size update after a field
    (b"\x0f\xff\xff\xff\xff\x7f", HPACKDecodingError),  # an integer past 2^28
    (b"\x00\x05ab", HPACKDecodingError),  # a string cut off
    (b"\x00\x81\xff\x00", HPACKDecodingError),  # a Huffman string that is all padding (EOS)
])
def test_hostile_blocks_raise_hpack_errors(block: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        Decoder().decode(block)


def test_header_list_size_is_bounded_while_decoding() -> None:
    decoder = Decoder()
    decoder.max_header_list_size = 1000
    block = hpack.Encoder().encode([(b"x-a", b"v" * 500), (b"x-b", b"v" * 500)])
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(block)
