"""Choosing a listener's certificate by the server name a client asks for (SNI).

Exact names first, then a wildcard of one leftmost label ("*.example.com" matches "api.example.com",
not "example.com" nor "a.b.example.com"), else the listener's default certificate: nginx's order for
server_name without regular expressions.
"""

from __future__ import annotations

import ssl


class CertificateChooser:
    """`ssl.SSLContext.sni_callback` for the listener's default context: switches a handshake to the
    context of the certificate its server name picks."""

    def __init__(self, by_name: dict[str, ssl.SSLContext]) -> None:
        self.exact = {name: ctx for name, ctx in by_name.items() if not name.startswith("*.")}
        self.wildcard = {name[2:]: ctx for name, ctx in by_name.items() if name.startswith("*.")}

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for `server_name`, or None for the default one."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None and self.wildcard:
            _, dot, parent = name.partition(".")
            if dot:
                found = self.wildcard.get(parent)
        return found

    def __call__(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        chosen = self.context_for(server_name)
        if chosen is not None:
            ssl_object.context = chosen
        return None  # go on with the handshake; a name we do not know gets the default certificate
