"""Client certificates (mutual TLS), nginx's `ssl_verify_client`, and the $ssl_client_* variables.

The listener's SSLContexts ask for a certificate signed by `ssl_client_certificate`'s CAs (both engines
handshake on these SSL_CTXs, so one setting serves both). "on": a handshake without a certificate that
verifies fails (counted as `client_certificate`); "optional": a client without a certificate goes on
(`$ssl_client_verify` = NONE), one that sends a certificate that does not verify fails as with "on".
The variables are read from the connection's ssl_object (uvloop's SSLObject or the C transport's shim,
both answer getpeercert(binary_form=True)). docs/architecture.md, "TLS".
"""

from __future__ import annotations

import hashlib
import ssl
from functools import lru_cache
from typing import Any

from ukproxy.tls.openssl_settings import set_verify_depth

VERIFY_MODES = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "on": ssl.CERT_REQUIRED}
VARIABLES = ("ssl_client_verify", "ssl_client_s_dn", "ssl_client_fingerprint")


def require_client_certificates(ctx: ssl.SSLContext, mode: str, ca_file: str, depth: int) -> None:
    """Ask for client certificates on `ctx`. Raises ssl.SSLError or OSError on a CA file check refuses."""
    if mode == "off":
        return
    ctx.load_verify_locations(cafile=ca_file)
    ctx.verify_mode = VERIFY_MODES[mode]
    set_verify_depth(ctx, depth)  # nginx's default of 1: the client's certificate and one CA


def _peer_der(ssl_object: Any) -> bytes | None:
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(True)  # type: ignore[no-any-return]


def value(name: str, ssl_object: Any) -> bytes:
    """One $ssl_client_* variable for a connection (b"" on plain http, as nginx)."""
    if ssl_object is None:
        return b""
    der = _peer_der(ssl_object)
    if name == "ssl_client_verify":
        # A certificate that fails verification ends the handshake, so a request sees only these two.
        return b"SUCCESS" if der else b"NONE"
    if der is None:
        return b""
    if name == "ssl_client_fingerprint":
        return hashlib.sha1(der).hexdigest().encode()  # nginx's: SHA-1, lower-case hex
    return _subject(der)


@lru_cache(maxsize=256)
def _subject(der: bytes) -> bytes:
    """The subject in RFC 2253 form, as nginx's $ssl_client_s_dn (cached: a client sends the same one often)."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string().encode()
