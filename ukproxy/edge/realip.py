"""Real client addresses (nginx's realip module): trusted proxies tell us who the client is.

A request whose peer is in `[real_ip] trusted_proxies` may name its client in X-Forwarded-For (the
default), X-Real-IP or Forwarded (RFC 7239). From X-Forwarded-For and Forwarded, as nginx's
`real_ip_recursive on` does, the client is the rightmost address that is not itself a trusted proxy
(with `recursive = false`: the rightmost). An address that does not parse ends the walk (the last
good address stands). A peer that is not trusted is the client, whatever it sends: its forwarding
headers are dropped on the way up (edge/forwarding.py), so a forged X-Forwarded-For reaches nobody.
The result is `HttpClientConnection.client_address`, what limits, logs and ip_hash key on.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ukproxy.edge.rules_config import RealIpConfig
    from ukproxy.proxy.http_request import RequestHead

_CACHED = 4096  # addresses whose trust is remembered (bounded: a client may come from anywhere)


class RealIp:
    def __init__(self, config: RealIpConfig):
        self.config = config
        self.networks = config.trusted_proxies
        self.header = config.header.encode()
        self.recursive = config.recursive
        self._trusted: dict[bytes, bool] = {}

    @classmethod
    def from_config(cls, config: RealIpConfig | None) -> RealIp | None:
        return None if config is None else cls(config)

    def trusts(self, address: bytes) -> bool:
        trusted = self._trusted.get(address)
        if trusted is None:
            if len(self._trusted) >= _CACHED:
                self._trusted.clear()
            ip = parse_ip(address)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a v4 client on a v6 socket (::ffff:a.b.c.d) is trusted as a.b.c.d
            trusted = self._trusted[address] = ip is not None and any(ip in net for net in self.networks)
        return trusted

    def client_ip(self, peer_ip: bytes, head: RequestHead) -> bytes:
        if not self.networks or not self.trusts(peer_ip):
            return peer_ip
        if self.header == b"x-forwarded-for":
            chain = head.forwarded_for.split(b",") if head.forwarded_for else []
        elif self.header == b"x-real-ip":
            chain = [head.header(b"x-real-ip") or b""]
        else:
            chain = forwarded_for_values(head)
        client = peer_ip
        for entry in reversed(chain):
            ip = parse_ip(entry.strip())
            if ip is None:
                break
            client = ip.compressed.encode()
            if not self.recursive or not self.trusts(client):
                break
        return client


def parse_ip(text: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as forwarding headers carry it: plain, "[v6]", "[v6]:port" or "v4:port"."""
    if text.startswith(b"["):
        text = text[1:text.find(b"]")] if b"]" in text else b""
    elif text.count(b":") == 1:
        text = text.split(b":", 1)[0]
    try:
        return ipaddress.ip_address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def forwarded_for_values(head: RequestHead) -> list[bytes]:
    """The for= of every element of every Forwarded header, in order (RFC 7239 4), quotes removed;
    an element without for= counts as an unknown hop."""
    values = []
    for line in head.lines:
        if line[:10].lower() != b"forwarded:":
            continue
        for element in line[10:-2].split(b","):
            found = b"unknown"
            for pair in element.split(b";"):
                name, _, value = pair.strip().partition(b"=")
                if name.lower() == b"for":
                    found = value.strip().strip(b'"')
            values.append(found)
    return values
