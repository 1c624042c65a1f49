"""The server-side SSLContexts of one TLS listener, built from its `TlsConfig`.

`build_server_contexts` is the one place a listener's contexts are made: the default certificate's
and one per [[listen.sni]] entry, all with the same protocols, ciphers, options, ticket keys and
ALPN list. Whoever needs more from every context of a listener (ALPN for HTTP/2, say) passes it here
or extends `_configure`, so a context chosen by SNI never lacks what the default one has.
docs/architecture.md, "TLS".
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ukproxy.tls.client_certs import require_client_certificates
from ukproxy.tls.config import CertificateConfig, TlsConfig
from ukproxy.tls.openssl_settings import set_ciphersuites
from ukproxy.tls.sni import CertificateChooser
from ukproxy.tls.tickets import SharedTicketKeys

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# Set for a version inside [lowest, highest] that ssl_protocols leaves out (e.g. "TLSv1.1 TLSv1.3").
_NO_VERSION = {
    "TLSv1": ssl.OP_NO_TLSv1,
    "TLSv1.1": ssl.OP_NO_TLSv1_1,
    "TLSv1.2": ssl.OP_NO_TLSv1_2,
    "TLSv1.3": ssl.OP_NO_TLSv1_3,
}
# TLS 1.3 session tickets sent after each full handshake. OpenSSL (and so nginx) sends 2, for a client that
# opens two connections at once; one is enough to resume (a client may resume with it again), and each one
# costs the server ~14 µs of OpenSSL and ~3 in tickets.py's callback, of ~185 µs for the whole handshake.
# docs/architecture.md, "TLS".
TICKETS_PER_HANDSHAKE = 1


@dataclass
class ServerContexts:
    """A listener's contexts: `default` is the one handshakes start on (the SNI callback may switch)."""

    default: ssl.SSLContext
    by_name: dict[str, ssl.SSLContext]
    tickets_shared: bool
    tickets: SharedTicketKeys | None  # held: OpenSSL calls into it for as long as the contexts live


def build_server_contexts(tls: TlsConfig, listener: str, tickets: SharedTicketKeys | None,
                          alpn: tuple[str, ...] = ()) -> ServerContexts:
    """Load the listener's certificates and make its contexts. Raises ssl.SSLError or OSError on a file
    that `tls.check` would have refused (it may have changed since). `alpn`: protocols to offer, in
    order of preference (e.g. ("h2", "http/1.1")); none means no ALPN."""
    shared = tickets is not None and tls.session_tickets  # until a context cannot take the shared keys

    def make(cert: CertificateConfig) -> ssl.SSLContext:
        nonlocal shared
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.certificate, cert.key)
        shared = _configure(ctx, tls, listener, tickets, alpn) and shared
        return ctx

    default = make(tls.certificate)
    by_name: dict[str, ssl.SSLContext] = {}
    for entry in tls.sni:
        ctx = make(entry.certificate)
        for name in entry.server_names:
            by_name[name] = ctx
    if by_name:
        default.sni_callback = CertificateChooser(by_name)
    return ServerContexts(default, by_name, shared, tickets)


def _configure(ctx: ssl.SSLContext, tls: TlsConfig, listener: str, tickets: SharedTicketKeys | None,
               alpn: tuple[str, ...]) -> bool:
    """What every context of the listener has in common. Whether it issues tickets with the shared keys."""
    ctx.minimum_version = _VERSIONS[tls.protocols[0]]
    ctx.maximum_version = _VERSIONS[tls.protocols[-1]]
    lowest, highest = list(_VERSIONS).index(tls.protocols[0]), list(_VERSIONS).index(tls.protocols[-1])
    for name in list(_VERSIONS)[lowest:highest + 1]:
        if name not in tls.protocols:
            ctx.options |= _NO_VERSION[name]
    if tls.ciphers is not None:
        ctx.set_ciphers(tls.ciphers)
    if tls.ciphersuites is not None:
        set_ciphersuites(ctx, tls.ciphersuites)
    # Clients may not renegotiate (a cheap way to make a server do handshakes); the server's cipher order wins.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    require_client_certificates(ctx, tls.verify_client, tls.client_certificate, tls.verify_depth)
    if not tls.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        return False
    ctx.num_tickets = TICKETS_PER_HANDSHAKE
    # Without the shared keys, OpenSSL's own per-process ticket key: resumption only on the same worker.
    return tickets is not None and tickets.install(ctx, listener.encode(), tls.session_timeout)
