"""`ukproxy check` on TLS listeners: it refuses unreadable files, a key that is not its certificate's and an
unknown protocol name, each with the file and the key path, and warns of a certificate about to expire."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.running import free_port, ukproxy_check
from tests.tls.conftest import Certificates
from ukproxy.config import ConfigError, loads


def _check(config: Path, text: str) -> subprocess.CompletedProcess[str]:
    config.write_text(text + '[[upstream]]\nname = "app"\nservers = ["127.0.0.1:9"]\n')
    return ukproxy_check(config)


def _listener(cert: Path, key: Path, extra: str = "") -> str:
    return f"""[[listen]]
address = "127.0.0.1:{free_port()}"
protocol = "http"
upstream = "app"
ssl = true
ssl_certificate = "{cert}"
ssl_certificate_key = "{key}"
{extra}
"""


def test_check_refuses_bad_tls_files_and_names_each(tmp_path: Path, certs: Certificates) -> None:
    missing = tmp_path / "nowhere.pem"
    config = tmp_path / "bad.toml"
    run = _check(config, "workers = 1\n[metrics]\nenabled = false\n"
                 + _listener(missing, certs.ec.key)  # listen[0]: no certificate file
                 + _listener(certs.ec.cert, tmp_path)  # listen[1]: the key path is a folder
                 + _listener(certs.ec.cert, certs.rsa.key)  # listen[2]: someone else's key
                 + _listener(certs.ec.cert, certs.ec.key,  # listen[3]: an unknown version, no deadline
                             'ssl_protocols = "TLSv1.2 TLSv1.4"\nssl_handshake_timeout = 0')
                 + _listener(certs.ec.cert, certs.ec.key, '[[listen.sni]]\nserver_names = ["rsa.test"]\n'
                             f'ssl_certificate = "{certs.rsa.cert}"\nssl_certificate_key = "{certs.ec.key}"'))
    assert run.returncode == 1
    errors = run.stderr
    assert f"{config}: listen[0].ssl_certificate: cannot read {missing}: No such file or directory" in errors
    assert f"{config}: listen[1].ssl_certificate_key: cannot read {tmp_path}: Is a directory" in errors
    assert (f"{config}: listen[2].ssl_certificate_key: the key in {certs.rsa.key} does not match the certificate "
            f"in {certs.ec.cert}") in errors
    assert f"{config}: listen[3].ssl_protocols: unknown protocol 'TLSv1.4'" in errors
    assert f"{config}: listen[3].ssl_handshake_timeout: must be more than 0" in errors
    assert f"{config}: listen[4].sni[0].ssl_certificate_key: the key in {certs.ec.key} does not match" in errors
    assert "test failed" in errors


def test_check_warns_of_a_certificate_expiring_within_14_days(tmp_path: Path, certs: Certificates) -> None:
    config = tmp_path / "expiring.toml"
    run = _check(config, "workers = 1\n[metrics]\nenabled = false\n"
                 + _listener(certs.expiring.cert, certs.expiring.key) + _listener(certs.ec.cert, certs.ec.key))
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1  # the 30-day certificate of listen[1] is fine
    assert f"{config}: listen[0].ssl_certificate: the certificate in {certs.expiring.cert} expires in 4 days" \
        in warnings[0]
    assert "test is successful" in run.stdout


def test_hsts_takes_each_form_conf_readme_shows(certs: Certificates) -> None:
    def hsts(value: str) -> str | None:
        text = _listener(certs.ec.cert, certs.ec.key, f"hsts = {value}")
        text += '[[upstream]]\nname = "app"\nservers = ["127.0.0.1:9"]\n'
        return loads(text, "hsts.toml").listen[0].tls.hsts

    assert hsts("true") == "max-age=31536000"
    assert hsts("false") is None
    assert hsts('"180d"') == "max-age=15552000"  # durations take days too
    assert hsts('"max-age=63072000; includeSubDomains; preload"') == "max-age=63072000; includeSubDomains; preload"
    with pytest.raises(ConfigError, match=r"hsts\.toml: listen\[0\]\.hsts: "):
        hsts('"sometimes"')
