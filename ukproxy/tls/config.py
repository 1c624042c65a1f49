"""The TLS keys of a `[[listen]]` (nginx's names) read into a frozen `TlsConfig`.

Only shapes are checked here; whether the files can be read, hold a key that matches its certificate
and are still valid is `tls.check`'s part (run by the config loader, so `check`, `run` and `reload`
all refuse the same things). docs/architecture.md, "TLS".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ukproxy.config_reader import Invalid, Table, boolean, duration, integer, list_of, one_of, string

# ssl_protocols names, as nginx spells them, oldest first.
PROTOCOL_NAMES = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
DEFAULT_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
DEFAULT_SESSION_TIMEOUT = 300.0  # nginx's ssl_session_timeout default
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
_NO_NAMES: tuple[str, ...] = ()
# A server name or a wildcard of one leftmost label: "api.example.com", "*.example.com".
_SERVER_NAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class CertificateConfig:
    """A certificate (PEM, the chain after it) and its private key; `key_path` says where in the config."""

    certificate: str
    key: str
    key_path: str  # "listen[0]" or "listen[0].sni[1]": where check's messages point


@dataclass(frozen=True)
class SniConfig:
    """More certificates on one listener, chosen by the client's server name (SNI)."""

    server_names: tuple[str, ...]  # lower case; "*.example.com" matches one more label
    certificate: CertificateConfig


@dataclass(frozen=True)
class TlsConfig:
    certificate: CertificateConfig  # the default: no SNI, or a name no [[listen.sni]] has
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    ciphers: str | None = None  # OpenSSL cipher list for TLS 1.2 and older; None: Python's default list
    ciphersuites: str | None = None  # TLS 1.3 suites, OpenSSL's names joined by ":"; None: OpenSSL's default
    sni: tuple[SniConfig, ...] = ()
    session_tickets: bool = True
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    hsts: str | None = None  # the Strict-Transport-Security value added to proxied responses
    # "native": handshake and records in C when built (tls/native.py); "python": uvloop's SSL layer (tls/acceptor.py)
    engine: str = "native"
    # mutual TLS (tls/client_certs.py): "off", "optional" or "on"; the CA bundle; nginx's depth default
    verify_client: str = "off"
    client_certificate: str = ""
    verify_depth: int = 1


def _file(value: Any) -> str:
    """A file path, absolute: relative paths are taken from the directory ukproxy runs in."""
    text = string(value)
    if not text or "\0" in text:
        raise Invalid(f"expected a file path, got {value!r}")
    return os.path.abspath(text)


def _protocols(value: Any) -> tuple[str, ...]:
    names = list_of(string)(value) if isinstance(value, list) else tuple(string(value).split())
    if not names:
        raise Invalid("at least one protocol is needed")
    for name in names:
        if name not in PROTOCOL_NAMES:
            raise Invalid(f"unknown protocol {name!r} (known: {' '.join(PROTOCOL_NAMES)})")
    return tuple(sorted(set(names), key=PROTOCOL_NAMES.index))


def _server_name(value: Any) -> str:
    name = string(value).lower().rstrip(".")
    if not _SERVER_NAME.fullmatch(name):
        raise Invalid(f"not a server name or a wildcard like \"*.example.com\": {value!r}")
    return name


def _hsts(value: Any) -> str | None:
    """true: one year; false: none; a duration: that max-age; a string starting "max-age": as given."""
    if value is False:
        return None
    if value is True:
        return "max-age=31536000"
    if isinstance(value, str) and value.strip().lower().startswith("max-age="):
        return value.strip()
    return f"max-age={int(duration(value))}"


def _certificate(t: Table, where: str) -> CertificateConfig:
    return CertificateConfig(
        certificate=t.get("ssl_certificate", _file, ""),
        key=t.get("ssl_certificate_key", _file, ""),
        key_path=where,
    )


def read_tls(t: Table) -> TlsConfig | None:
    """The TLS part of one [[listen]] table, or None when `ssl` is off. Reads every TLS key (so the
    caller's `done()` never calls them unknown) and reports keys given without `ssl = true`."""
    on = t.get("ssl", boolean, False)
    keys = ("ssl_certificate", "ssl_certificate_key", "ssl_protocols", "ssl_ciphers", "ssl_ciphersuites",
            "ssl_session_tickets", "ssl_session_timeout", "ssl_handshake_timeout", "hsts", "sni", "ssl_engine",
            "ssl_verify_client", "ssl_client_certificate", "ssl_verify_depth")
    if not on:
        for key in keys:
            if t.has(key):
                t.seen.add(key)
                t.issues.add(t.key(key), "needs ssl = true")
        return None
    certificate = _certificate(t, t.path)
    sni = []
    seen_names: dict[str, str] = {}
    for s in t.tables("sni"):
        names: tuple[str, ...] = s.get("server_names", list_of(_server_name), _NO_NAMES)
        if not names:
            s.issues.add(s.key("server_names"), "at least one server name is needed")
        for name in names:
            if name in seen_names:
                s.issues.add(s.key("server_names"), f"{name!r} is already listed by {seen_names[name]}")
            seen_names.setdefault(name, s.path)
        sni.append(SniConfig(server_names=names, certificate=_certificate(s, s.path)))
        for key in ("ssl_certificate", "ssl_certificate_key"):
            if not s.has(key):
                s.issues.add(s.key(key), "required key is missing")
        s.done()
    for key in ("ssl_certificate", "ssl_certificate_key"):
        if not t.has(key):
            t.issues.add(t.key(key), "required with ssl = true")
    tls = TlsConfig(
        certificate=certificate,
        protocols=t.get("ssl_protocols", _protocols, DEFAULT_PROTOCOLS),
        ciphers=t.get("ssl_ciphers", string, None),
        ciphersuites=t.get("ssl_ciphersuites", string, None),
        sni=tuple(sni),
        session_tickets=t.get("ssl_session_tickets", boolean, True),
        session_timeout=t.get("ssl_session_timeout", duration, DEFAULT_SESSION_TIMEOUT),
        handshake_timeout=t.get("ssl_handshake_timeout", duration, DEFAULT_HANDSHAKE_TIMEOUT),
        hsts=t.get("hsts", _hsts, None),
        engine=t.get("ssl_engine", one_of("native", "python"), "native"),
        verify_client=t.get("ssl_verify_client", one_of("off", "optional", "on"), "off"),
        client_certificate=t.get("ssl_client_certificate", _file, ""),
        verify_depth=t.get("ssl_verify_depth", integer(0, 100), 1),
    )
    if tls.verify_client != "off" and not tls.client_certificate:
        t.issues.add(t.key("ssl_client_certificate"),
                     f"required with ssl_verify_client = {tls.verify_client!r} (the CAs client certificates are "
                     "checked against)")
    for key, value in (("ssl_session_timeout", tls.session_timeout), ("ssl_handshake_timeout", tls.handshake_timeout)):
        if value <= 0:
            t.issues.add(t.key(key), "must be more than 0")
    return tls


def read_https_redirect(t: Table) -> int | None:
    """`https_redirect` on a plain http listener: true (port 443) or the https port to send clients to."""
    value = t.get("https_redirect", lambda v: v, None)
    if value is None or value is False:
        return None
    if value is True:
        return 443
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    t.issues.add(t.key("https_redirect"), f"expected true, false or a port 1-65535, got {value!r}")
    return None
