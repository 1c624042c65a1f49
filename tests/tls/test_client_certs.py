"""Mutual TLS (ssl_verify_client) as real clients meet it: curl and openssl s_client with certificates made
by the openssl CLI (one signed by the listener's client CA, one by another CA), on the C engine and on
uvloop's path, with "on", "optional" and "off"; the $ssl_client_* headers the upstream sees; and what
`ukproxy check` refuses."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.helpers import scrape
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port, ukproxy_check
from tests.tls.certs import Authority, Leaf
from tests.tls.clients import curl, s_client
from tests.tls.conftest import Certificates, https_listener, tls_keys, upstream_block
from tests.waiting import wait_until

FAILURES = "ukproxy_tls_handshake_failures_total"
ROUTE = """
[[route]]
prefix = "/"
upstream = "app"
[route.request_headers.set]
X-Client-Verify = "$ssl_client_verify"
X-Client-DN = "$ssl_client_s_dn"
X-Client-Fingerprint = "$ssl_client_fingerprint"
"""


class Site:
    def __init__(self, proxy: RunningProxy, ports: dict[str, int], metrics_port: int, client: Leaf, stranger: Leaf,
                 client_ca: Path):
        self.proxy, self.ports, self.metrics_port = proxy, ports, metrics_port
        self.client, self.stranger, self.client_ca = client, stranger, client_ca

    def failures(self, name: str) -> float:
        return scrape(self.metrics_port).value(FAILURES, reason="client_certificate",
                                               listener=f"127.0.0.1:{self.ports[name]}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("mtls")
    clients = Authority(tmp / "clients")  # the CA ukproxy trusts for client certificates
    client = clients.leaf("alice", ["alice.test"])
    stranger = Authority(tmp / "others").leaf("mallory", ["mallory.test"])  # signed by a CA ukproxy does not know
    backend = Backend("app")
    names = ("on", "optional", "off", "on_python", "optional_python", "metrics")
    ports = {name: free_port() for name in names}
    metrics_port = ports.pop("metrics")
    verify = f'ssl_client_certificate = "{clients.cert}"\n'
    listeners = {
        "on": 'ssl_verify_client = "on"\n' + verify,
        "optional": 'ssl_verify_client = "optional"\nssl_verify_depth = 2\n' + verify,
        "off": "",
        "on_python": 'ssl_verify_client = "on"\nssl_engine = "python"\n' + verify,
        "optional_python": 'ssl_verify_client = "optional"\nssl_engine = "python"\n' + verify,
    }
    config = f"workers = 1\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n" + "".join(
        https_listener(ports[name], tls_keys(certs.ec) + extra) for name, extra in listeners.items())
    config += upstream_block("app", backend.address) + ROUTE
    proxy = RunningProxy(tmp, config, "mtls").start([*ports.values(), metrics_port], expect_workers=1)
    try:
        yield Site(proxy, ports, metrics_port, client, stranger, clients.cert)
    finally:
        proxy.stop()
        backend.close()


def _upstream_saw(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The headers the backend's /headers echoed, by lower-case name."""
    body = run.stdout[run.stdout.index("\n{") + 1:]
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def _get(site: Site, name: str, certs: Certificates, leaf: Leaf | None) -> subprocess.CompletedProcess[str]:
    args = ["--cert", str(leaf.cert), "--key", str(leaf.key)] if leaf else []
    return curl(f"https://localhost:{site.ports[name]}/headers", certs.ca.cert, *args)


def _fingerprint(leaf: Leaf) -> str:
    return hashlib.sha1(ssl.PEM_cert_to_DER_cert(leaf.cert.read_text())).hexdigest()


@pytest.mark.parametrize("name", ["on", "on_python"])
def test_on_needs_a_certificate_from_the_clients_ca(site: Site, certs: Certificates, name: str) -> None:
    run = _get(site, name, certs, site.client)
    assert run.returncode == 0, run.stderr
    saw = _upstream_saw(run)
    assert saw["x-client-verify"] == "SUCCESS"
    assert saw["x-client-dn"] == "CN=alice.test"
    assert saw["x-client-fingerprint"] == _fingerprint(site.client)
    before = site.failures(name)
    for leaf in (None, site.stranger):  # no certificate; one signed by another CA
        run = _get(site, name, certs, leaf)
        assert run.returncode != 0 and "HTTP/" not in run.stdout, run.stdout
    # openssl s_client too, and each refusal is counted under its reason
    stranger = site.stranger
    refused = s_client(site.ports[name], certs.ca.cert, "-cert", str(stranger.cert), "-key", str(stranger.key))
    assert "HTTP/1.1 200" not in refused.output
    wait_until(lambda: site.failures(name), "3 client_certificate failures", accept=lambda n: n == before + 3)


@pytest.mark.parametrize("name", ["optional", "optional_python"])
def test_optional_lets_a_client_without_a_certificate_in(site: Site, certs: Certificates, name: str) -> None:
    saw = _upstream_saw(_get(site, name, certs, None))
    assert saw["x-client-verify"] == "NONE"
    # empty: the header is not sent (as nginx's proxy_set_header with an empty value)
    assert "x-client-dn" not in saw and "x-client-fingerprint" not in saw
    shown = s_client(site.ports[name], certs.ca.cert, "-cert", str(site.client.cert), "-key", str(site.client.key))
    assert shown.done and "HTTP/1.1 200" in shown.output
    assert '"X-Client-Verify", "SUCCESS"' in shown.output and '"X-Client-DN", "CN=alice.test"' in shown.output
    before = site.failures(name)  # a certificate that does not verify is refused, as with "on"
    run = _get(site, name, certs, site.stranger)
    assert run.returncode != 0 and "HTTP/" not in run.stdout
    wait_until(lambda: site.failures(name), "a client_certificate failure", accept=lambda n: n == before + 1)


def test_off_asks_for_nothing(site: Site, certs: Certificates) -> None:
    run = _get(site, "off", certs, site.stranger)  # sent or not, a certificate is not asked for
    assert run.returncode == 0, run.stderr
    assert _upstream_saw(run)["x-client-verify"] == "NONE"
    assert "Acceptable client certificate CA names" not in s_client(site.ports["off"], certs.ca.cert).output


def test_check_refuses_a_missing_or_unreadable_client_ca(tmp_path: Path, certs: Certificates) -> None:
    missing = tmp_path / "no-ca.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    config = tmp_path / "mtls.toml"
    config.write_text("workers = 1\n[metrics]\nenabled = false\n"
                      + https_listener(free_port(), tls_keys(certs.ec) + 'ssl_verify_client = "on"\n')
                      + https_listener(free_port(), tls_keys(certs.ec) + 'ssl_verify_client = "optional"\n'
                                       f'ssl_client_certificate = "{missing}"\n')
                      + https_listener(free_port(), tls_keys(certs.ec) + 'ssl_verify_client = "on"\n'
                                       f'ssl_client_certificate = "{not_pem}"\nssl_verify_depth = -1\n')
                      + https_listener(free_port(), tls_keys(certs.ec) + 'ssl_verify_client = "yes"\n')
                      + upstream_block("app", "127.0.0.1:9"))
    run = ukproxy_check(config)
    assert run.returncode == 1
    errors = run.stderr
    assert f"{config}: listen[0].ssl_client_certificate: required with ssl_verify_client = 'on'" in errors
    assert f"{config}: listen[1].ssl_client_certificate: cannot read {missing}: No such file or directory" in errors
    assert f"{config}: listen[2].ssl_client_certificate: {not_pem} holds no PEM certificate" in errors
    assert f"{config}: listen[2].ssl_verify_depth:" in errors
    assert f"{config}: listen[3].ssl_verify_client:" in errors
