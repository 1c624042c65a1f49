"""The master rotates the session ticket keys and every worker hears of it: tickets issued before a rotation
name one key, tickets issued after it another, on a real ukproxy of two workers (ssl_session_timeout 1 s
makes the rotation period 1 s)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.clients import s_client
from tests.tls.conftest import Certificates, tls_keys
from tests.waiting import wait_until


def ticket_key_name(session: Path) -> str:
    """The first 16 bytes of the session's ticket: the name of the key that encrypted it (tls/tickets.py)."""
    text = subprocess.run(["openssl", "sess_id", "-in", str(session), "-text", "-noout"], capture_output=True,
                          text=True, timeout=15, check=True).stdout
    m = re.search(r"TLS session ticket:\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16})", text)
    assert m, text
    return m.group(1).replace(" ", "").replace("-", "")


def test_rotated_keys_reach_every_worker(tmp_path: Path, certs: Certificates) -> None:
    backend = Backend("app")
    port = free_port()
    proxy = RunningProxy(tmp_path, f"""
workers = 2
[metrics]
enabled = false
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
{tls_keys(certs.ec)}
ssl_session_timeout = "1s"
[[upstream]]
name = "app"
servers = ["{backend.address}"]
""", "rotation").start([port], expect_workers=2)
    try:
        def names(label: str) -> set[str]:
            found = set()
            for i in range(6):  # several connections: SO_REUSEPORT spreads them over both workers
                session = tmp_path / f"{label}{i}.pem"
                assert s_client(port, certs.ca.cert, "-sess_out", str(session)).done
                found.add(ticket_key_name(session))
            return found

        before = names("before")
        # Counted after the tickets above: on a loaded machine their handshakes can span a rotation themselves.
        rotations = len(re.findall(r"session ticket keys rotated", proxy.log()))
        wait_until(lambda: len(re.findall(r"session ticket keys rotated", proxy.log())), "a rotation",
                   accept=lambda n: n >= rotations + 2, timeout=15)  # two: no ticket above was issued after one
        after = names("after")
        assert after and not after & before, (before, after)  # every worker encrypts with rotated keys
    finally:
        proxy.stop()
        backend.close()
