"""Building the heads the proxy sends: requests to upstreams, responses to clients, and its own answers.

Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and never cross the proxy: Connection
and the fields it names, Keep-Alive, TE, Trailer, Transfer-Encoding (the proxy re-frames bodies),
Upgrade (except to carry an upgrade) and every Proxy-* field.
"""

from __future__ import annotations

from http import HTTPStatus

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"))
VIA = b"ukproxy"
# Request headers the proxy writes itself (Expect: it answered 100-continue already).
_REPLACED = frozenset((b"host", b"content-length", b"x-real-ip", b"x-forwarded-proto", b"expect"))
# Request headers dropped outright (hop-by-hop or written by us); X-Forwarded-For and Via are merged instead.
_REQUEST_DROP = HOP_BY_HOP | _REPLACED
# Response headers never copied as they are: hop-by-hop ones, and Content-Length (we write our own framing).
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}


def is_hop_by_hop(lname: bytes, named: frozenset[bytes] | set[bytes]) -> bool:
    return lname in HOP_BY_HOP or lname.startswith(b"proxy-") or lname in named


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_request_head(
    method: bytes,
    path: bytes,
    host: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    named: frozenset[bytes],
    client_ip: bytes,
    content_length: int | None,
    chunked: bool,
    upgrade: bytes | None,
) -> bytes:
    """The request as it goes upstream: HTTP/1.1, keep-alive, forwarding headers, our own framing.
    `host` is the client's Host (or absolute-form authority); HTTP/1.1 needs one, so never empty."""
    lines = [method + b" " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"]
    forwarded_for = None
    via = None
    drop = _REQUEST_DROP if named <= HOP_BY_HOP else _REQUEST_DROP | named  # usually nothing new
    for name, value in headers:
        lname = name.lower()
        if lname in drop or lname[:6] == b"proxy-":
            continue
        if lname == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            continue
        if lname == b"via":
            via = value if via is None else via + b", " + value
            continue
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"X-Forwarded-For: " + (forwarded_for + b", " + client_ip if forwarded_for else client_ip) + b"\r\n")
    lines.append(b"X-Real-IP: " + client_ip + b"\r\n")
    lines.append(b"X-Forwarded-Proto: http\r\n")
    hop = version + b" " + VIA
    lines.append(b"Via: " + (via + b", " + hop if via else hop) + b"\r\n")
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    if upgrade is not None:
        lines.append(b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def client_response_head(
    version: bytes,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    upgrade: bool = False,
    named: frozenset[bytes] | None = None,
) -> bytes:
    """The upstream's response as the client gets it. `version` is the client's: 1.0 clients hear
    "keep-alive" said out loud, 1.1 clients hear "close". `named`: the response's Connection tokens,
    if the caller has them already."""
    lines = [b"HTTP/1.1 %d " % status + reason + b"\r\n"]
    if named is None:
        named = connection_tokens(headers)
    drop = _RESPONSE_DROP if named <= HOP_BY_HOP else _RESPONSE_DROP | named
    for name, value in headers:
        lname = name.lower()
        if (lname in drop or lname[:6] == b"proxy-") and not (upgrade and lname == b"upgrade"):
            continue
        lines.append(name + b": " + value + b"\r\n")
    if upgrade:
        lines.append(b"Connection: upgrade\r\n")
    else:
        if chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        elif content_length is not None:
            lines.append(b"Content-Length: %d\r\n" % content_length)
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif version == b"1.0":
            lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def error_response(status: int, keep_alive: bool, version: bytes = b"1.1", head_only: bool = False) -> bytes:
    """The proxy's own answer: a small text body naming the status."""
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b"Error"
    body = b"%d %s\n" % (status, phrase)
    connection = b"close" if not keep_alive else b"keep-alive"
    head = (
        b"HTTP/1.1 %d %s\r\nServer: ukproxy\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n" % (status, phrase, len(body), connection)
    )
    return head if head_only else head + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
