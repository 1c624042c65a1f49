"""SSL_CTX settings Python's ssl has no API for, set with ctypes on the context's SSL_CTX (found as
tls/tickets.py finds it): TLS 1.3 cipher suites (`ssl_ciphersuites`) and the client certificate verify
depth (`ssl_verify_depth`). Both engines handshake on these SSL_CTXs. docs/architecture.md, "TLS".
"""

from __future__ import annotations

import ctypes
import ssl
from functools import cache
from typing import Any

from ukproxy.tls.tickets import _loaded_library, _OpenSsl, ssl_ctx_pointer


@cache
def _libssl() -> tuple[Any, Any, _OpenSsl]:
    lib = ctypes.CDLL(_loaded_library("libssl"))
    depth = lib.SSL_CTX_set_verify_depth
    depth.argtypes = [ctypes.c_void_p, ctypes.c_int]
    depth.restype = None
    suites = lib.SSL_CTX_set_ciphersuites
    suites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    suites.restype = ctypes.c_int
    return depth, suites, _OpenSsl()


def set_verify_depth(ctx: ssl.SSLContext, depth: int) -> None:
    set_depth, _, openssl = _libssl()
    set_depth(ssl_ctx_pointer(ctx, openssl), depth)


def set_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """The TLS 1.3 suites `ctx` offers, in order ("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256").
    Raises ssl.SSLError when OpenSSL takes none of them (it skips unknown names in a list)."""
    _, set_suites, openssl = _libssl()
    if set_suites(ssl_ctx_pointer(ctx, openssl), suites.encode()) != 1:
        raise ssl.SSLError(f"OpenSSL knows none of the TLS 1.3 cipher suites {suites!r}")


def unknown_ciphersuites(suites: str) -> list[str]:
    """The names in `suites` OpenSSL does not know (each tried alone: in a list it skips them silently)."""
    unknown = []
    for name in suites.split(":"):
        try:
            set_ciphersuites(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), name)
        except ssl.SSLError:
            unknown.append(name)
    return unknown
