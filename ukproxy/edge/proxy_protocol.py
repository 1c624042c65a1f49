"""The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): who a load balancer's client was.

A listener with `proxy_protocol = true` expects every connection to begin with a PROXY header: a
`ProxyProtocolGate` reads it (bounded in size and by `proxy_protocol_timeout`), then hands the
connection to the listener's own protocol, whose client address becomes the header's source
(`set_proxied_addresses`), and passes it the bytes that followed. A connection without a valid
header gets a 400 (http) or is closed (tcp). v2's LOCAL command and v1's UNKNOWN (a balancer's own
health checks) keep the connection's real addresses. A listener without the option takes no PROXY
header: on http it is a 400 by name (http_request.py); on tcp its bytes are the client's own.
Upstreams of tcp listeners with `proxy_protocol = "v1"` or `"v2"` get a header on every connection
(`header_bytes`), as nginx's `proxy_protocol on` and HAProxy's send-proxy/send-proxy-v2 send it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from ukproxy.protocol import Event

if TYPE_CHECKING:
    from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.proxy_protocol")

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX: Final = 107  # the longest v1 line, CRLF included
V2_MAX: Final = 16 + 4096  # the fixed part and the addresses with TLVs: more is no balancer's header
Address = tuple[str, int]


class ProxyHeaderError(Exception):
    pass


class ProxyHeader:
    """`source` and `destination` as the balancer saw them; None for LOCAL, UNKNOWN and non-IP families."""

    def __init__(self, source: Address | None, destination: Address | None, version: int):
        self.source = source
        self.destination = destination
        self.version = version


def parse(data: bytes) -> tuple[ProxyHeader | None, int]:
    """A header at the start of `data` and its length, or (None, 0) while it is incomplete. Raises
    ProxyHeaderError for anything that is not a valid header (or will not become one)."""
    if data[:12] == V2_SIGNATURE[:len(data[:12])] and data[:1] == b"\r":
        return _parse_v2(data)
    if data[:6] == b"PROXY "[:len(data[:6])]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader | None, int]:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 line longer than 107 bytes")
        return None, 0
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(None, None, 1), end + 2
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 line {data[:end]!r}")
    version = 4 if parts[1] == b"TCP4" else 6
    source = (_ip(parts[2], version), _port(parts[4]))
    destination = (_ip(parts[3], version), _port(parts[5]))
    return ProxyHeader(source, destination, 1), end + 2


def _ip(text: bytes, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError(f"bad address {text!r} in a PROXY header") from None
    if ip.version != version:
        raise ProxyHeaderError(f"{text!r} is not an IPv{version} address")
    return ip.compressed


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text!r} in a PROXY header")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader | None, int]:
    if len(data) < 16:
        return None, 0
    version_command, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"PROXY v2 command {command}")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError(f"PROXY v2 header of {16 + length} bytes")
    if len(data) < 16 + length:
        return None, 0
    body = data[16:16 + length]
    address_family = family >> 4
    if command == 0 or address_family not in (1, 2):  # LOCAL; UNSPEC or UNIX
        return ProxyHeader(None, None, 2), 16 + length
    size = 4 if address_family == 1 else 16
    if length < 2 * size + 4:
        raise ProxyHeaderError(f"PROXY v2 addresses of {length} bytes")
    source_ip = ipaddress.ip_address(body[:size]).compressed
    destination_ip = ipaddress.ip_address(body[size:2 * size]).compressed
    source_port, destination_port = struct.unpack("!HH", body[2 * size:2 * size + 4])
    return ProxyHeader((source_ip, source_port), (destination_ip, destination_port), 2), 16 + length


def header_bytes(version: int, source: Address | None, destination: Address | None) -> bytes:
    """The header a tcp upstream gets for a client: v1's line or v2's binary form (LOCAL/UNKNOWN when
    the addresses are unknown or of two families)."""
    ips = None
    if source is not None and destination is not None:
        ips = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        if ips[0].version != ips[1].version:
            ips = None
    if version == 1:
        if ips is None or source is None or destination is None:
            return b"PROXY UNKNOWN\r\n"
        family = b"TCP4" if ips[0].version == 4 else b"TCP6"
        return b"PROXY %s %s %s %d %d\r\n" % (family, ips[0].compressed.encode(), ips[1].compressed.encode(),
                                                source[1], destination[1])
    if ips is None or source is None or destination is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL, UNSPEC
    body = ips[0].packed + ips[1].packed + struct.pack("!HH", source[1], destination[1])
    family_byte = 0x11 if ips[0].version == 4 else 0x21  # TCP over IPv4 / IPv6
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family_byte, len(body)) + body


class Proxied(Protocol):
    """What a listener's protocol offers the gate: the addresses a PROXY header named."""

    def set_proxied_addresses(self, source: Address, destination: Address | None) -> None: ...


class ProxyProtocolGate(asyncio.Protocol):
    """The first protocol of a connection on a proxy_protocol listener: reads the header, then steps aside."""

    def __init__(self, make_inner: Callable[[], asyncio.Protocol], state: WorkerState, timeout: float, http: bool,
                 listener: str = ""):
        self.make_inner = make_inner
        self.state = state
        self.timeout = timeout
        self.http = http
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.handed_over = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.timeout > 0:
            self.timer = self.state.loop.call_later(self.timeout, self._refuse, "no PROXY header in time")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            header, used = parse(self.buffer)
        except ProxyHeaderError as e:
            self._refuse(str(e))
            return
        if header is not None:
            self._hand_over(header, self.buffer[used:])

    def eof_received(self) -> bool:
        return False  # closed before a whole header: nothing to answer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handed_over:
            self._cancel_timer()
            self.handed_over = True  # counted once
            self.state.connection_closed()  # the accept cycle counted it open; its own protocol never saw it

    def _hand_over(self, header: ProxyHeader, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        self.handed_over = True
        self.buffer = b""
        inner = self.make_inner()
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if header.source is not None:
            inner.set_proxied_addresses(header.source, header.destination)  # type: ignore[attr-defined]
        if rest and not transport.is_closing():
            inner.data_received(rest)  # type: ignore[attr-defined]

    def _refuse(self, why: str) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.handed_over:
            return
        peer = transport.get_extra_info("peername")
        log.info("proxy protocol: %s from %s", why, peer[0] if peer else "?")
        if self.http:  # answered, counted and logged as any request refused before its head
            transport.write(b"HTTP/1.1 400 Bad Request\r\nServer: ukproxy\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 33\r\nConnection: close\r\n\r\n400 Bad Request: no PROXY header\n")
            self.state.count(Event.HTTP_REJECTED, "400")
            self.state.request_finished(self.listener, None, 400, 0.0, None, None, None,
                                        peer[0].encode() if peer else b"-", 0)
        transport.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def gate_factory(make_inner: Callable[[], asyncio.Protocol], state: WorkerState, timeout: float,
                 http: bool, listener: str = "") -> Callable[[], asyncio.Protocol]:
    return lambda: ProxyProtocolGate(make_inner, state, timeout, http, listener)
