"""The TLS tests' certificates (made once per session with the openssl CLI) and config text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tls.certs import Authority, Leaf


class Certificates:
    def __init__(self, folder: Path):
        self.ca = Authority(folder)
        self.ec = self.ca.leaf("ec", ["localhost"])  # ECDSA P-256, the default certificate
        self.rsa = self.ca.leaf("rsa", ["rsa.test"], kind="rsa")  # RSA 2048, chosen by SNI
        self.wild = self.ca.leaf("wild", ["*.wild.test"])
        # the same name, a new key: a renewal, short-lived (10 days) so the master warns of it
        self.renewed = self.ca.leaf("renewed", ["localhost"], days=10)
        self.expiring = self.ca.leaf("expiring", ["localhost"], days=5)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls-certs"))


def tls_keys(leaf: Leaf) -> str:
    return f'ssl = true\nssl_certificate = "{leaf.cert}"\nssl_certificate_key = "{leaf.key}"\n'


def https_listener(port: int, keys: str, upstream: str = "app") -> str:
    """A [[listen]] block terminating TLS on 127.0.0.1:port (keys: tls_keys' text, and any more options)."""
    return f'[[listen]]\naddress = "127.0.0.1:{port}"\nprotocol = "http"\nupstream = "{upstream}"\n{keys}'


def upstream_block(name: str, address: str) -> str:
    return f'[[upstream]]\nname = "{name}"\nservers = ["{address}"]\n'


def install(leaf: Leaf, folder: Path) -> Leaf:
    """Copy `leaf` to folder/live.pem and live.key, the files a reload test's config names: installing
    another leaf there later is the renewal."""
    live = Leaf(folder / "live.pem", folder / "live.key")
    shutil.copy(leaf.cert, live.cert)
    shutil.copy(leaf.key, live.key)
    return live
