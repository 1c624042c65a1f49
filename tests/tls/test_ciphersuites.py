"""`ssl_ciphersuites` (TLS 1.3 suites) with openssl s_client on the C engine and on uvloop's path: the suite
listed is agreed, one left out cannot be and is counted as no_shared_cipher; `ukproxy check` refuses a name
OpenSSL does not know."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.observability.helpers import scrape
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port, ukproxy_check
from tests.tls.clients import s_client
from tests.tls.conftest import Certificates, https_listener, tls_keys, upstream_block
from tests.waiting import wait_until

ONLY = 'ssl_ciphersuites = "TLS_CHACHA20_POLY1305_SHA256"\n'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[tuple[dict[str, int], int]]:
    tmp = tmp_path_factory.mktemp("suites")
    backend = Backend("app")
    native_port, python_port, metrics_port = free_port(), free_port(), free_port()
    ports = {"native": native_port, "python": python_port}
    config = (f'workers = 1\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
              + https_listener(ports["native"], tls_keys(certs.ec) + ONLY)
              + https_listener(ports["python"], tls_keys(certs.ec) + ONLY + 'ssl_engine = "python"\n')
              + upstream_block("app", backend.address))
    proxy = RunningProxy(tmp, config, "suites").start([*ports.values(), metrics_port], expect_workers=1)
    try:
        yield ports, metrics_port
    finally:
        proxy.stop()
        backend.close()


@pytest.mark.parametrize("engine", ["native", "python"])
def test_only_the_listed_suite_is_agreed(site: tuple[dict[str, int], int], certs: Certificates, engine: str) -> None:
    ports, metrics_port = site
    port = ports[engine]
    agreed = s_client(port, certs.ca.cert, "-tls1_3", "-ciphersuites",
                      "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    assert agreed.done and "HTTP/1.1 200" in agreed.output
    assert re.search(r"Cipher is TLS_CHACHA20_POLY1305_SHA256", agreed.output), agreed.output

    def refused() -> float:
        return scrape(metrics_port).value("ukproxy_tls_handshake_failures_total", reason="no_shared_cipher",
                                          listener=f"127.0.0.1:{port}")

    before = refused()
    left_out = s_client(port, certs.ca.cert, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert not left_out.done
    wait_until(refused, "the left-out suite counted as no_shared_cipher", accept=lambda n: n == before + 1)


def test_check_refuses_an_unknown_suite(tmp_path: Path, certs: Certificates) -> None:
    config = tmp_path / "suites.toml"
    config.write_text("workers = 1\n[metrics]\nenabled = false\n"
                      + https_listener(free_port(), tls_keys(certs.ec)
                                       + 'ssl_ciphersuites = "TLS_AES_256_GCM_SHA384:TLS_AES_512_MAGIC"\n')
                      + upstream_block("app", "127.0.0.1:9"))
    run = ukproxy_check(config)
    assert run.returncode == 1
    assert (f"{config}: listen[0].ssl_ciphersuites: OpenSSL knows no TLS 1.3 cipher suite 'TLS_AES_512_MAGIC'"
            in run.stderr), run.stderr
