"""`https_redirect` on a plain http listener: every request answered 301 to the same URL over https.

nginx's `return 301 https://$host$request_uri;`, with the https port when it is not 443. The host is
the request's Host without its port (or the listener's address when a 1.0 request has none).
"""

from __future__ import annotations

from ukproxy.proxy.http_request import RequestHead


def _host_without_port(host: bytes) -> bytes:
    if host.startswith(b"["):  # [v6]:port
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(b":", 1)[0] if host.count(b":") == 1 else host


def https_location(head: RequestHead, port: int, listener: str) -> bytes:
    """The Location header line (with its CRLF) sending `head` to https on `port`."""
    host = head.host_header or listener.encode()
    authority = _host_without_port(host)
    if port != 443:
        authority += b":%d" % port
    target = head.target if head.target.startswith(b"/") else b"/"
    return b"Location: https://%s%s\r\n" % (authority, target)
