"""Client requests off the wire: llhttp (via httptools) plus the limits and checks a proxy needs on top.

`RequestReader.feed(data)` turns bytes into events appended to a queue, in wire order:
(HEAD, RequestHead), (BODY, bytes)..., (END, None) per request; (TAIL, bytes) for the bytes after an
upgrade request; (ERROR, HttpError) once, after which the reader ignores its input. Bodies are never
buffered whole: each BODY is a slice of one read, de-chunked.

llhttp in strict mode already refuses the classic smuggling shapes (Content-Length with
Transfer-Encoding, duplicate Content-Length, bad chunk sizes, obs-fold, bare CR/LF, invalid tokens).
On top of it: HTTP/1.0 or 1.1 only, Host required (once) on 1.1 and well formed, Transfer-Encoding
exactly "chunked" and only on 1.1, size and count limits, CONNECT refused, upgrades only on body-less GETs.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Final

import httptools

from ukproxy.config import HttpConfig

# Event kinds. Final: compiled (mypyc), they are constants rather than module lookups.
HEAD: Final = 0
BODY: Final = 1
END: Final = 2
TAIL: Final = 3
ERROR: Final = 4

IDEMPOTENT = frozenset((b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"))
# Request headers the proxy reads, replaces, merges or drops (hop-by-hop, RFC 9110 7.6.1); all the
# others go upstream as they came, kept as ready-made lines.
SPECIAL = frozenset((
    b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect", b"keep-alive", b"te",
    b"trailer", b"x-forwarded-for", b"via", b"x-real-ip", b"x-forwarded-proto",
))
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
# Per worker, for every connection: Host values already checked (→ host name), and Connection values
# already split. Clients send few distinct ones; the caches are emptied if a client sends many.
_CACHED = 1024
_KNOWN_HOSTS: dict[bytes, str] = {}
_TOKENS: dict[bytes, frozenset[bytes]] = {}
# Header names as clients spell them → the lower-cased name when the proxy handles the header itself
# (SPECIAL, Proxy-*), b"" when it goes upstream as it came: one dict lookup per header instead of a
# lower(), a set lookup and a slice.
_NAMES: dict[bytes, bytes] = {}
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_START_LINE_OVERHEAD: Final = 16  # method, spaces, "HTTP/1.1\r\n": counted against max_header_size like nginx's buffer


class HttpError(Exception):
    """A request we refuse: the status to answer and a short reason for the log and the counter."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class RequestHead:
    # A plain class, not a dataclass: compiled (mypyc), its __init__ is native; a dataclass's is Python.
    # Fields that most requests leave alone are class defaults.
    host = ""  # lower-cased, without port
    host_header = b""  # as received (with port), or from an absolute-form target
    keep_alive = True
    chunked = False
    content_length: int | None = None
    upgrade: bytes | None = None  # the Upgrade header of an upgrade request
    expect_continue = False
    connection_tokens: frozenset[bytes] = frozenset()
    forwarded_for: bytes | None = None  # X-Forwarded-For and Via as received (merged), for ours to extend
    via: bytes | None = None
    request_id: bytes | None = None  # [request_id] or a rule's $request_id (edge/http_edge.py): logged

    def __init__(self, method: bytes, target: bytes, version: bytes, lines: list[bytes],
                 special: list[tuple[bytes, bytes]], size: int = 0):
        self.method = method
        self.target = target  # as received
        self.path = target  # origin-form (path and query) for routing; b"*" for OPTIONS *
        self.version = version  # b"1.0" or b"1.1"
        self.lines = lines  # the headers that go upstream as they came: b"Name: value\r\n"
        self.special = special  # the others (SPECIAL, Proxy-*): lower-cased name, value
        self.size = size  # bytes of the head, roughly

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r} {self.target!r} HTTP/{self.version.decode()})"

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header, by its lower-cased name."""
        for name, value in self.special:
            if name == lower_name:
                return value
        n = len(lower_name)
        for line in self.lines:
            if line[n:n + 1] == b":" and line[:n].lower() == lower_name:
                return line[n + 2:-2]
        return None


class RequestReader:
    """httptools callbacks in, events out; one per client connection."""

    def __init__(self, limits: HttpConfig, events: deque[tuple[int, Any]]):
        self.limits = limits
        self.events = events
        self.parser = httptools.HttpRequestParser(self)
        self.in_head = False  # between the first byte of a request and the end of its head
        self.head_bytes = 0
        self.done = False  # after an error, an upgrade or a request that closes the connection
        self.upgraded = False
        self._url = b""
        self._lines: list[bytes] = []
        self._special: list[tuple[bytes, bytes]] = []
        self._fields = 0
        self._head: RequestHead | None = None
        self._body_bytes = 0
        self._began_this_feed = False
        self._field_bytes = 0  # header lines so far, as _precise_head_bytes counts them
        # A keep-alive client sends the same Host every time: checked and lower-cased once.
        self._host_header = b""
        self._host = ""
        # Read for every header: native attributes, not the config object's (a Python class).
        self._max_headers = limits.max_headers
        self._max_header_size = limits.max_header_size

    def feed(self, data: bytes) -> None:
        if self.upgraded:
            self.events.append((TAIL, data))
            return
        if self.done:
            return
        self._began_this_feed = False
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self.upgraded = True
            offset = e.args[0]
            if offset < len(data):
                self.events.append((TAIL, data[offset:]))
            return
        except httptools.HttpParserCallbackError as e:
            context = e.__context__
            self._error(context if isinstance(context, HttpError) else HttpError(400, f"bad request: {e}"))
            return
        except httptools.HttpParserInvalidMethodError:
            # A PROXY protocol header where the listener takes none (edge/proxy_protocol.py) is refused by name.
            proxied = data.startswith(b"PROXY ") or data.lstrip(b"\r\n").startswith(b"\0\r\nQUIT\n")
            self._error(HttpError(400, "PROXY protocol header on a listener without proxy_protocol" if proxied
                                  else "invalid method"))
            return
        except httptools.HttpParserInvalidURLError:
            self._error(HttpError(400, "invalid request target"))
            return
        except httptools.HttpParserError as e:
            if self.done:
                return  # data after a request that closes the connection: ignored, not an error
            self._error(HttpError(400, f"malformed request: {e}"))
            return
        if self.in_head:
            # A head still incomplete: bound what it holds even if no header line ends (slowloris, huge value).
            if was_in_head and not self._began_this_feed:
                self.head_bytes += len(data)  # all of this read went into the head
            else:
                self.head_bytes = self._partial_head_bytes(data)
            if self.head_bytes > self.limits.max_header_size:
                self._error(HttpError(431, "request head too large"))

    def close(self) -> None:
        """The connection is gone. The parser holds our callbacks (a reference cycle that only the cyclic
        collector would free, with all the reader holds): drop it for one that holds none."""
        self.done = True
        self.parser = _NO_PARSER

    def _error(self, error: HttpError) -> None:
        self.done = True
        self.in_head = False
        self.events.append((ERROR, error))

    def _partial_head_bytes(self, data: bytes) -> int:
        """How much of `data` the head that began in it holds: from its request line to the end."""
        if self._url:
            start = data.rfind(b" " + self._url + b" HTTP/")
            if start >= 0:
                return len(data) - start
        return self._precise_head_bytes()  # the request line is still incomplete: its target is counted

    def _precise_head_bytes(self) -> int:
        return _START_LINE_OVERHEAD + len(self._url) + self._field_bytes

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self._began_this_feed = True
        self.head_bytes = 0
        self._url = b""
        self._lines = []
        self._special = []
        self._fields = 0
        self._field_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_uri_size:
            raise HttpError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] in (32, 9):  # trailing space or tab: rare, so tested before stripping
            value = value.rstrip(b" \t")
        lname = _NAMES.get(name)
        if lname is None:
            lname = special_name(name, SPECIAL, _NAMES)
        if lname:
            self._special.append((lname, value))
        else:
            self._lines.append(b"%s: %s\r\n" % (name, value))
        self._fields += 1
        self._field_bytes += len(name) + len(value) + 4
        if self._fields > self._max_headers:
            raise HttpError(431, "too many header fields")
        if _START_LINE_OVERHEAD + len(self._url) + self._field_bytes > self._max_header_size:
            raise HttpError(431, "request head too large")

    def on_headers_complete(self) -> None:
        self.in_head = False
        head = self._make_head()
        self._head = head
        self.events.append((HEAD, head))

    def on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        limit = self.limits.client_max_body_size
        if limit and self._body_bytes > limit:
            raise HttpError(413, "request body too large")
        self.events.append((BODY, data))

    def on_message_complete(self) -> None:
        self.events.append((END, None))
        if self._head is not None and not self._head.keep_alive:
            self.done = True  # whatever follows is never read as a request

    # httptools looks every callback up when it makes a parser (one per connection): one we lacked cost an
    # AttributeError each time. Chunk boundaries mean nothing to us (on_body has the data).

    def on_chunk_header(self) -> None:
        pass

    def on_chunk_complete(self) -> None:
        pass

    # the head

    def _make_head(self) -> RequestHead:
        parser = self.parser
        text_version = parser.get_http_version()
        version = _VERSIONS.get(text_version)
        if version is None:
            if text_version == "0.9":
                raise HttpError(400, "HTTP/0.9 is not supported")
            raise HttpError(505, f"HTTP/{text_version} is not supported")
        method: bytes = parser.get_method()
        if method == b"CONNECT":
            raise HttpError(405, "CONNECT is not supported by a reverse proxy")
        head = RequestHead(method, self._url, version, self._lines, self._special, self._precise_head_bytes())
        self._read_headers(head)
        self._read_target(head)
        head.keep_alive = _keep_alive(version, head.connection_tokens)
        # llhttp upgrades only a request with an Upgrade header (or a CONNECT, refused above): without one,
        # no need to ask.
        if head.upgrade is not None and parser.should_upgrade():
            if method != b"GET" or head.has_body:
                raise HttpError(400, "an upgrade must be a GET without a body")
        else:
            head.upgrade = None
        limit = self.limits.client_max_body_size
        if limit and head.content_length is not None and head.content_length > limit:
            raise HttpError(413, "request body too large")
        return head

    def _read_headers(self, head: RequestHead) -> None:
        # Counts and first values rather than lists, and Connection's cached token set as it is (one
        # Connection header is the usual case): no container is built for a request's few special headers.
        host: bytes | None = None
        hosts = 0
        transfer_encoding = b""
        transfer_encodings = 0
        tokens: frozenset[bytes] = frozenset()
        for lname, value in head.special:
            if lname == b"host":
                if host is None:
                    host = value
                hosts += 1
            elif lname == b"content-length":
                head.content_length = int(value)  # llhttp allows digits only, once
            elif lname == b"transfer-encoding":
                transfer_encoding = value
                transfer_encodings += 1
            elif lname == b"connection":
                named = connection_tokens(value)
                tokens = named if not tokens else tokens | named
            elif lname == b"upgrade":
                head.upgrade = value
            elif lname == b"expect":
                if value.lower() != b"100-continue":
                    raise HttpError(417, "unsupported expectation")
                head.expect_continue = True
            elif lname == b"x-forwarded-for":
                head.forwarded_for = value if head.forwarded_for is None else head.forwarded_for + b", " + value
            elif lname == b"via":
                head.via = value if head.via is None else head.via + b", " + value
        if tokens:
            head.connection_tokens = tokens
        if transfer_encodings:
            if head.version == b"1.0":
                raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if transfer_encodings != 1 or transfer_encoding.lower() != b"chunked":
                raise HttpError(400, "Transfer-Encoding other than chunked")
            head.chunked = True
        if hosts > 1:
            raise HttpError(400, "more than one Host header")
        if host is not None:
            if host != self._host_header and host not in _KNOWN_HOSTS and not _HOST.fullmatch(host):
                raise HttpError(400, "invalid Host header")
            head.host_header = host
        elif head.version == b"1.1":
            raise HttpError(400, "HTTP/1.1 request without Host")

    def _read_target(self, head: RequestHead) -> None:
        target = head.target
        if target.startswith(b"/"):
            head.path = target
        elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            # absolute-form: its authority replaces Host (RFC 9112 3.2.2)
            rest = target.split(b"//", 1)[1]
            slash = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
            authority, path = rest[:slash], rest[slash:]
            if b"@" in authority or not _HOST.fullmatch(authority):
                raise HttpError(400, "invalid authority in request target")
            head.host_header = authority
            head.path = path if path.startswith(b"/") else b"/" + path
        elif target == b"*" and head.method == b"OPTIONS":
            head.path = b"*"
        else:
            raise HttpError(400, "invalid request target")
        if head.host_header != self._host_header:
            self._host = known_host(head.host_header)
            self._host_header = head.host_header  # valid: from a checked Host or authority
        head.host = self._host


_NO_PARSER: Final = httptools.HttpRequestParser(object())  # a closed reader's: no callbacks, never fed


def known_host(host_header: bytes) -> str:
    """host_name of a Host value already checked, remembered for the next connection that sends it."""
    host = _KNOWN_HOSTS.get(host_header)
    if host is None:
        if len(_KNOWN_HOSTS) >= _CACHED:
            _KNOWN_HOSTS.clear()
        host = _KNOWN_HOSTS[host_header] = host_name(host_header)
    return host


def special_name(name: bytes, special: frozenset[bytes], names: dict[bytes, bytes]) -> bytes:
    """The lower-cased `name` if the proxy handles that header itself (in `special`, or Proxy-*), else b"";
    remembered in `names` (a request's or a response's, bounded) for the next head that spells it the same way."""
    lname = name.lower()
    if lname not in special and lname[:6] != b"proxy-":
        lname = b""
    if len(names) >= _CACHED:
        names.clear()
    names[name] = lname
    return lname


def valid_host(value: bytes) -> bool:
    """A Host value (or an HTTP/2 :authority) of an allowed shape: a name or address and a port, no userinfo."""
    return value in _KNOWN_HOSTS or _HOST.fullmatch(value) is not None


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """A Connection header's tokens, lower-cased ("Keep-Alive", "close": the same few every time)."""
    tokens = _TOKENS.get(value)
    if tokens is None:
        if len(_TOKENS) >= _CACHED:
            _TOKENS.clear()
        tokens = _TOKENS[value] = frozenset(t.strip().lower() for t in value.split(b","))
    return tokens


def host_name(host_header: bytes) -> str:
    """The host part of a Host value, lower-cased and without port or trailing dot."""
    if host_header.startswith(b"["):
        return host_header[: host_header.find(b"]") + 1].decode("ascii").lower()
    return host_header.rsplit(b":", 1)[0].rstrip(b".").decode("ascii", "replace").lower()


def _keep_alive(version: bytes, tokens: frozenset[bytes]) -> bool:
    if b"close" in tokens:
        return False
    return version == b"1.1" or b"keep-alive" in tokens
