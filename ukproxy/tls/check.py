"""What `ukproxy check` (and `run`, and `reload`) refuses in a TLS listener's files, and what it warns of.

Refused, each with the file and the key path: a certificate or key that cannot be read or holds no
PEM certificate / private key, a key that does not match its certificate, an OpenSSL cipher list that
selects nothing, a TLS 1.3 suite OpenSSL does not know, an ssl_client_certificate CA bundle that
cannot be read or holds no certificate. Unknown `ssl_protocols` names are refused while reading
(tls/config.py). Warned of: a certificate that expires within `EXPIRY_WARNING_DAYS` (or has expired).
docs/architecture.md, "TLS".
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ukproxy.tls.config import CertificateConfig, TlsConfig
from ukproxy.tls.openssl_settings import unknown_ciphersuites

if TYPE_CHECKING:  # cryptography itself is imported when a TLS listener is checked: 30 ms for every process else
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    from ukproxy.config import Config
    from ukproxy.config_reader import Issues

EXPIRY_WARNING_DAYS = 14


def certificates(tls: TlsConfig) -> Iterator[CertificateConfig]:
    yield tls.certificate
    for entry in tls.sni:
        yield entry.certificate


def _read(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"


def load_certificate_chain(path: str) -> tuple[list[x509.Certificate], str | None]:
    """The PEM certificates in `path` (the server's first, then its chain), or why there are none."""
    from cryptography import x509

    data, problem = _read(path)
    if data is None:
        return [], problem
    try:
        return x509.load_pem_x509_certificates(data), None
    except ValueError:
        return [], f"{path} holds no PEM certificate"


def _load_key(path: str) -> tuple[PrivateKeyTypes | None, str | None]:
    from cryptography.hazmat.primitives import serialization

    data, problem = _read(path)
    if data is None:
        return None, problem
    try:
        return serialization.load_pem_private_key(data, password=None), None
    except TypeError:
        return None, f"{path} is an encrypted key: give the key without a passphrase"
    except ValueError as e:
        return None, f"{path} holds no PEM private key ({e})"
    except Exception as e:  # cryptography's UnsupportedAlgorithm and the like
        return None, f"{path} holds no usable private key ({e})"


def certificate_problems(cert: CertificateConfig) -> list[tuple[str, str]]:
    """(key path, reason) for each thing wrong with one certificate and its key."""
    where_cert, where_key = f"{cert.key_path}.ssl_certificate", f"{cert.key_path}.ssl_certificate_key"
    if not cert.certificate or not cert.key:
        return []  # missing keys are reported by the reader
    chain, cert_problem = load_certificate_chain(cert.certificate)
    key, key_problem = _load_key(cert.key)
    problems = []
    if cert_problem:
        problems.append((where_cert, cert_problem))
    if key_problem:
        problems.append((where_key, key_problem))
    if problems or key is None:
        return problems
    from cryptography.hazmat.primitives import serialization

    ours = chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = key.public_key().public_bytes(serialization.Encoding.DER,  # type: ignore[union-attr]
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        return [(where_key, f"the key in {cert.key} does not match the certificate in {cert.certificate}")]
    try:  # what the workers will do with them
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert.certificate, cert.key)
    except (ssl.SSLError, OSError) as e:
        return [(where_cert, f"OpenSSL refuses {cert.certificate} with {cert.key}: {e}")]
    return []


def client_ca_problem(path: str) -> str | None:
    """Why the CA bundle of ssl_client_certificate cannot be used, or None."""
    _, problem = load_certificate_chain(path)
    if problem:
        return problem
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as e:
        return f"OpenSSL refuses the CA certificates in {path}: {e}"
    return None


def check_certificates(config: Config, issues: Issues) -> None:
    """Record every refused TLS file and cipher list of the config's listeners (see the module doc)."""
    for i, listen in enumerate(config.listen):
        tls = listen.tls
        if tls is None:
            continue
        for cert in certificates(tls):
            for key, reason in certificate_problems(cert):
                issues.add(key, reason)
        if tls.ciphersuites is not None:
            unknown = unknown_ciphersuites(tls.ciphersuites) if tls.ciphersuites else [""]
            if unknown:
                issues.add(f"listen[{i}].ssl_ciphersuites",
                           f"OpenSSL knows no TLS 1.3 cipher suite {', '.join(map(repr, unknown))} "
                           "(OpenSSL's names joined by ':', e.g. \"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\")")
        if tls.verify_client != "off" and tls.client_certificate:
            problem = client_ca_problem(tls.client_certificate)
            if problem:
                issues.add(f"listen[{i}].ssl_client_certificate", problem)
        if tls.ciphers is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(tls.ciphers)
            except ssl.SSLError:
                issues.add(f"listen[{i}].ssl_ciphers", f"OpenSSL selects no cipher from {tls.ciphers!r}")


def expiry_warnings(config: Config, days: int = EXPIRY_WARNING_DAYS,
                    now: datetime.datetime | None = None) -> list[str]:
    """"file: key path: ..." for each listener certificate that expires within `days` (or has expired)."""
    now = now or datetime.datetime.now(datetime.UTC)
    warnings = []
    for listen in config.listen:
        if listen.tls is None:
            continue
        for cert in certificates(listen.tls):
            chain, _ = load_certificate_chain(cert.certificate)
            if not chain:
                continue
            ends = chain[0].not_valid_after_utc
            left = ends - now
            where = f"{config.path}: {cert.key_path}.ssl_certificate"
            if left.total_seconds() <= 0:
                warnings.append(f"{where}: the certificate in {cert.certificate} expired on {ends:%Y-%m-%d %H:%M} UTC")
            elif left <= datetime.timedelta(days=days):
                warnings.append(f"{where}: the certificate in {cert.certificate} expires in {left.days} days "
                                f"({ends:%Y-%m-%d %H:%M} UTC)")
    return warnings
