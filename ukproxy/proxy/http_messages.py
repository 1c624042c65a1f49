"""Building the heads the proxy sends: requests to upstreams, responses to clients, and its own answers.

Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and never cross the proxy: Connection
and the fields it names, Keep-Alive, TE, Trailer, Transfer-Encoding (the proxy re-frames bodies),
Upgrade (except to carry an upgrade) and every Proxy-* field. The parsers set them apart as they read
(`RequestHead.special`, `UpstreamResponse.lines`), so the heads here are built from ready-made lines.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from ukproxy.proxy.http_request import SPECIAL, RequestHead

VIA: Final = b"ukproxy"
_VIA_SELF = {b"1.1": b"1.1 " + VIA, b"1.0": b"1.0 " + VIA, b"2.0": b"2 " + VIA}  # HTTP/2's Via version is "2"


def upstream_request_head(head: RequestHead, path: bytes, host: bytes, client_ip: bytes,
                          scheme: bytes = b"http") -> bytes:
    """The request as it goes upstream: HTTP/1.1, keep-alive, forwarding headers, our own framing.
    `host` is the client's Host (or absolute-form authority); HTTP/1.1 needs one, so never empty."""
    lines = head.lines
    named = head.connection_tokens
    if named and not named <= SPECIAL:  # Connection names other headers: they are hop-by-hop too
        lines = [line for line in lines if line[: line.index(b":")].lower() not in named]
    forwarded_for = head.forwarded_for + b", " + client_ip if head.forwarded_for else client_ip
    via = _VIA_SELF[head.version]
    if head.via:
        via = head.via + b", " + via
    if head.chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
    elif head.content_length is not None:
        framing = b"Content-Length: %d\r\n" % head.content_length
    else:
        framing = b""
    if head.upgrade is not None:
        framing += b"Connection: upgrade\r\nUpgrade: " + head.upgrade + b"\r\n"
    return (
        b"%s %s HTTP/1.1\r\nHost: %s\r\n%sX-Forwarded-For: %s\r\nX-Real-IP: %s\r\nX-Forwarded-Proto: %s\r\n"
        b"Via: %s\r\n%s\r\n" % (head.method, path, host, b"".join(lines), forwarded_for, client_ip, scheme, via,
                                   framing)
    )


def client_response_head(
    version: bytes,
    status: int,
    reason: bytes,
    lines: list[bytes],
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The upstream's response as the client gets it. `lines`: its header lines without the hop-by-hop
    ones and Content-Length. `version` is the client's: 1.0 clients hear "keep-alive" said out loud,
    1.1 clients hear "close". `upgrade`: the Upgrade header of a 101, passed on with it."""
    if upgrade is not None:
        tail = b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n\r\n"
    else:
        if chunked:
            tail = b"Transfer-Encoding: chunked\r\n"
        elif content_length is not None:
            tail = b"Content-Length: %d\r\n" % content_length
        else:
            tail = b""
        if not keep_alive:
            tail += b"Connection: close\r\n\r\n"
        elif version == b"1.0":
            tail += b"Connection: keep-alive\r\n\r\n"
        else:
            tail += b"\r\n"
    return b"HTTP/1.1 %d %s\r\n%s%s" % (status, reason, b"".join(lines), tail)


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


LAST_CHUNK: Final = b"0\r\n\r\n"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
