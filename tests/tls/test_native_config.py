"""`ssl_engine` on a TLS listener (conf/README.md): "native" by default, "python" kept, anything else and a
key without `ssl = true` refused with the file and the key path."""

from __future__ import annotations

import pytest

from tests.tls.conftest import Certificates, tls_keys
from ukproxy.config import ConfigError, loads


def _engine(certs: Certificates, extra: str, ssl: bool = True) -> str:
    keys = tls_keys(certs.ec) if ssl else ""
    text = f'[[listen]]\naddress = "127.0.0.1:8443"\nprotocol = "http"\nupstream = "app"\n{keys}{extra}\n'
    text += '[[upstream]]\nname = "app"\nservers = ["127.0.0.1:9"]\n'
    tls = loads(text, "engine.toml").listen[0].tls
    assert tls is not None
    return tls.engine


def test_ssl_engine_is_native_unless_python_and_refuses_the_rest(certs: Certificates) -> None:
    assert _engine(certs, "") == "native"
    assert _engine(certs, 'ssl_engine = "python"') == "python"
    with pytest.raises(ConfigError, match=r"engine\.toml: listen\[0\]\.ssl_engine: .*'fast'"):
        _engine(certs, 'ssl_engine = "fast"')
    with pytest.raises(ConfigError, match=r"engine\.toml: listen\[0\]\.ssl_engine: needs ssl = true"):
        _engine(certs, 'ssl_engine = "native"', ssl=False)
