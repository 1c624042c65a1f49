"""Compressing responses on their way to the client (nginx's gzip filter; brotli as ngx_brotli does it).

`start_encoding` looks at one response head once it has come (http_exchange.Exchange._response_head) and
says whether its body is compressed, and how: the response must be a 200, 403 or 404 with a body (never
HEAD, 204, 304, nor a 206 or any answer to a Range request), not already encoded (Content-Encoding),
without Cache-Control: no-transform, of a listed media type and at least the least length (when its
length is known); the client must accept the coding (Accept-Encoding, q-values honoured, q=0 refuses
it). A response that could have been compressed says `Vary: Accept-Encoding` (gzip_vary), whether this
client got it compressed or not, so a cache keeps the two apart. A compressed response loses its
Content-Length and goes chunked (to an HTTP/1.0 client: until the connection closes; on an HTTP/2 stream:
DATA frames, h2_stream.H2Exchange), its Accept-Ranges, and its strong ETag becomes weak, as nginx does.

The body is compressed as it streams: each upstream read is compressed and flushed (Z_SYNC_FLUSH, or
brotli's flush), so a slow stream (server-sent events) is never held back, nothing is buffered past
one read, and the client's flow control applies as before. Settings: `compress_config.py`; where the
hook sits: docs/architecture.md, "The edge".
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Final

from ukproxy.edge.compress_config import STATUSES, CodingRule, CompressPolicy

if TYPE_CHECKING:
    from ukproxy.proxy.http_request import RequestHead
    from ukproxy.proxy.http_upstream import UpstreamResponse

VARY: Final = b"Vary: Accept-Encoding\r\n"
_ALIASES: Final = {b"x-gzip": b"gzip"}  # RFC 9110 8.4.1.3: the same coding as gzip
_CACHED: Final = 256  # distinct Accept-Encoding values remembered per worker (clients send few)
_ACCEPTS: dict[bytes, dict[bytes, float]] = {}


class Encoder:
    """One response body's compressor."""

    def feed(self, pieces: list[bytes], last: bool) -> bytes:
        """The compressed form of what one upstream read brought, flushed; with `last`, the stream's end."""
        raise NotImplementedError


class GzipEncoder(Encoder):
    __slots__ = ("_stream",)

    def __init__(self, level: int):
        self._stream = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: the gzip wrapper

    def feed(self, pieces: list[bytes], last: bool) -> bytes:
        stream = self._stream
        out = [stream.compress(piece) for piece in pieces]
        out.append(stream.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))
        return b"".join(out)


class BrotliEncoder(Encoder):
    __slots__ = ("_stream",)

    def __init__(self, level: int):
        import brotli  # only where brotli is configured (compress_config checks that it imports)

        self._stream = brotli.Compressor(quality=level)

    def feed(self, pieces: list[bytes], last: bool) -> bytes:
        stream = self._stream
        out = [stream.process(piece) for piece in pieces]
        out.append(stream.finish() if last else stream.flush())
        return b"".join(out)


def accepted(value: bytes) -> dict[bytes, float]:
    """Accept-Encoding as coding → q (RFC 9110 12.5.3); "*" stands for codings not named. Remembered per value."""
    found = _ACCEPTS.get(value)
    if found is not None:
        return found
    found = {}
    for item in value.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(b";"):
            name, _, number = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = min(max(float(number.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # a q we cannot read: do not use the coding
        found[_ALIASES.get(coding, coding)] = q
    if len(_ACCEPTS) >= _CACHED:
        _ACCEPTS.clear()
    _ACCEPTS[value] = found
    return found


def choose(rules: list[CodingRule], accept: dict[bytes, float]) -> CodingRule | None:
    """The coding the client prefers among `rules` (in our order of preference on a tie), or None."""
    best: CodingRule | None = None
    best_q = 0.0
    anything = accept.get(b"*", 0.0)
    for rule in rules:
        q = accept.get(rule.name, anything)
        if q > best_q:
            best, best_q = rule, q
    return best


def _request_headers(head: RequestHead) -> tuple[bytes | None, bool]:
    """The request's Accept-Encoding (several fields joined), and whether it asks for a Range."""
    accept: bytes | None = None
    ranged = False
    for line in head.lines:
        first = line[:1]
        if first in b"aA" and line[:16].lower() == b"accept-encoding:":
            value = line[16:-2].strip()
            accept = value if accept is None else accept + b"," + value
        elif first in b"rR" and line[:6].lower() == b"range:":
            ranged = True
    return accept, ranged


def start_encoding(policy: CompressPolicy, head: RequestHead, response: UpstreamResponse
                   ) -> tuple[list[bytes], Encoder | None]:
    """The response's header lines as the client gets them, and the encoder for its body (None: as it is)."""
    lines = response.lines
    if response.bodyless or response.status not in STATUSES or head.method == b"HEAD":
        return lines, None
    media = ""
    varies = False
    for line in lines:
        colon = line.index(b":")
        name = line[:colon].lower()
        if name == b"content-type":
            media = line[colon + 1:].split(b";", 1)[0].strip().lower().decode("latin-1")
        elif name == b"content-encoding":
            if line[colon + 1:].strip().lower() not in (b"", b"identity"):
                return lines, None  # already encoded
        elif name == b"cache-control":
            if b"no-transform" in line.lower():
                return lines, None
        elif name == b"vary":
            tokens = {token.strip().lower() for token in line[colon + 1:].split(b",")}
            varies = varies or b"accept-encoding" in tokens or b"*" in tokens
    rules = [rule for rule in policy.codings if rule.takes(media, response.content_length)]
    if not rules:
        return lines, None
    if policy.vary and not varies:
        lines = [*lines, VARY]
    accept, ranged = _request_headers(head)
    if accept is None or ranged:
        return lines, None
    if head.version == b"1.0" and not policy.http_10:
        return lines, None
    if head.via is not None and not policy.proxied:
        return lines, None  # gzip_proxied off: a proxy in front may not pass on what it cannot cache apart
    rule = choose(rules, accepted(accept))
    if rule is None:
        return lines, None
    out = []
    for line in lines:
        lower = line[:17].lower()
        if lower.startswith(b"accept-ranges:"):
            continue  # a compressed body has no byte ranges of its own
        if lower.startswith(b"content-encoding:"):
            continue  # "identity" (anything else was never compressed): ours replaces it
        if lower.startswith(b"etag:"):
            value = line[5:].strip()
            if value.startswith(b'"'):
                line = b"ETag: W/" + value + b"\r\n"  # the bytes differ: only a weak validator still holds
        out.append(line)
    out.append(b"Content-Encoding: " + rule.name + b"\r\n")
    encoder: Encoder = BrotliEncoder(rule.level) if rule.name == b"br" else GzipEncoder(rule.level)
    return out, encoder
