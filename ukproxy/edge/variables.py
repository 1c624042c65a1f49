"""Values with variables, as nginx writes them: "$remote_addr", "${host}:8080", "/new/$1".

A template is compiled once, at config load, into literal pieces and variable names, so a rule with
no variable costs nothing to render. The variables are nginx's: $remote_addr (the client address,
`HttpClientConnection.client_address`), $host, $request_id, $scheme, $request_uri (the target as
received), $uri (its path), $args (its query), $http_NAME (a request header); in rewrites $1..$9 too.
On a TLS listener with ssl_verify_client: $ssl_client_verify, $ssl_client_s_dn, $ssl_client_fingerprint
(tls/client_certs.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ukproxy.config_reader import Invalid
from ukproxy.edge.request_id import new_request_id
from ukproxy.tls import client_certs

if TYPE_CHECKING:
    from ukproxy.proxy.http_request import RequestHead

NAMES = ("remote_addr", "host", "request_id", "scheme", "request_uri", "uri", "args", *client_certs.VARIABLES)
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class RequestContext:
    """What the variables of one request are read from."""

    def __init__(self, head: RequestHead, client_ip: bytes, scheme: bytes = b"http"):
        self.head = head
        self.client_ip = client_ip
        self.scheme = scheme
        self.target = head.path  # after rewrites, the target that goes upstream
        self.groups: tuple[bytes, ...] = ()  # a rewrite regex's captures, for $1..$9
        self.ssl_object: Any = None  # the connection's, for $ssl_client_* (set by the connection on TLS)

    @property
    def request_id(self) -> bytes:
        """The request's id, made the first time a rule asks for it (and then logged, as nginx does)."""
        head = self.head
        if head.request_id is None:
            head.request_id = new_request_id()
        return head.request_id

    def value(self, name: str) -> bytes:
        if name == "remote_addr":
            return self.client_ip
        if name == "host":
            return self.head.host.encode() or self.head.host_header
        if name == "request_id":
            return self.request_id
        if name == "scheme":
            return self.scheme
        if name == "request_uri":
            return self.head.target
        if name == "uri":
            return self.target.split(b"?", 1)[0]
        if name == "args":
            return self.target.partition(b"?")[2]
        if name.startswith("http_"):
            return self.head.header(name[5:].replace("_", "-").encode()) or b""
        if name.startswith("ssl_client_"):
            return client_certs.value(name, self.ssl_object)
        index = int(name)  # a capture: checked at load
        return self.groups[index - 1] if index <= len(self.groups) else b""


class Template:
    """A compiled value: `render(context)` gives its bytes."""

    __slots__ = ("constant", "parts", "text")

    def __init__(self, text: str, parts: list[tuple[bool, str]]):
        self.text = text
        # (variable name or "", literal bytes): one of the two per piece
        self.parts: list[tuple[str, bytes]] = [(piece, b"") if is_variable else ("", piece.encode("latin-1"))
                                               for is_variable, piece in parts]
        self.constant: bytes | None = None if any(v for v, _ in parts) else text.encode("latin-1")

    @property
    def variables(self) -> list[str]:
        return [name for name, _ in self.parts if name]

    def render(self, context: RequestContext) -> bytes:
        if self.constant is not None:
            return self.constant
        out: list[bytes] = []
        for name, literal in self.parts:
            out.append(context.value(name) if name else literal)
        return b"".join(out)


def compile_template(text: str, captures: int = -1, body: bool = False) -> Template:
    """`captures`: how many regex groups $1..$9 may refer to (-1: none are allowed); `body`: a response
    body, which may hold line breaks. Raises Invalid."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise Invalid(f"{text!r}: header values and targets are Latin-1 (use %-escapes)") from None
    if not body and any(c in text for c in "\r\n\0"):
        raise Invalid(f"{text!r}: CR, LF and NUL cannot be in a header value or a target")
    parts: list[tuple[bool, str]] = []
    at = 0
    for m in _VARIABLE.finditer(text):
        if m.start() > at:
            parts.append((False, text[at:m.start()]))
        name = m.group(1) or m.group(2)
        if name.isdigit():
            if captures < 0:
                raise Invalid(f"${name}: captures are only for rewrite replacements")
            if not 1 <= int(name) <= 9 or int(name) > captures:
                raise Invalid(f"${name}: the regex has {captures} group(s)")
        elif name not in NAMES and not (name.startswith("http_") and len(name) > 5):
            raise Invalid(f"unknown variable ${name} (known: {', '.join('$' + n for n in NAMES)}, $http_NAME)")
        parts.append((True, name))
        at = m.end()
    if at < len(text):
        parts.append((False, text[at:]))
    return Template(text, parts)
