"""`ukproxy reload` with a renewed certificate: new handshakes get it, a connection opened before finishes
its requests on the old one, and a session from before the reload resumes on the new worker processes
(the master's ticket keys outlive workers)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.clients import client_context, read_response, s_client
from tests.tls.conftest import Certificates, https_listener, install, tls_keys, upstream_block
from tests.waiting import wait_until


def _get(conn: ssl.SSLSocket, path: str) -> bytes:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head, body = read_response(conn)
    return head.split(b"\r\n")[0] + b" " + body


def test_reload_swaps_the_certificate_without_dropping_connections(tmp_path: Path, certs: Certificates) -> None:
    live = install(certs.ec, tmp_path)
    backend = Backend("app")
    port = free_port()
    proxy = RunningProxy(tmp_path, f"""
workers = 1
[metrics]
enabled = false
{https_listener(port, tls_keys(live))}
{upstream_block("app", backend.address)}
""", "reload").start([port], expect_workers=1)
    try:
        old_pids = {w.pid for w in proxy.workers()}
        session = tmp_path / "session.pem"
        before = s_client(port, certs.ca.cert, "-sess_out", str(session))
        assert before.done and not before.reused
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_context(certs.ca.cert).wrap_socket(raw, server_hostname="localhost") as open_conn:
            old_cert = open_conn.getpeercert(binary_form=True)
            assert _get(open_conn, "/one").endswith(b"app GET /one")
            # the renewal: new files in place, then reload
            install(certs.renewed, tmp_path)
            reload = proxy.cli("reload")
            assert reload.returncode == 0, reload.stderr + proxy.log()
            proxy.wait_workers(1, exclude=old_pids)
            assert f"listen[0].ssl_certificate: the certificate in {live.cert} expires in 9 days" in proxy.log()
            # new handshakes: the renewed certificate
            assert _peer_der(port, certs.ca.cert) == ssl.PEM_cert_to_DER_cert(certs.renewed.cert.read_text())
            # the connection from before still works, on the old worker and the old certificate
            assert _get(open_conn, "/two").endswith(b"app GET /two")
            assert open_conn.getpeercert(binary_form=True) == old_cert == ssl.PEM_cert_to_DER_cert(
                certs.ec.cert.read_text())
        # a session from the old worker resumes on the new one: the ticket keys are the master's
        after = s_client(port, certs.ca.cert, "-sess_in", str(session))
        assert after.reused, after.output
        wait_until(lambda: [w for w in proxy.workers() if w.pid in old_pids], "the old worker to finish",
                   accept=lambda ws: not ws)
    finally:
        proxy.stop()
        backend.close()


def _peer_der(port: int, ca: Path) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client_context(ca).wrap_socket(raw, server_hostname="localhost") as conn:
        return conn.getpeercert(binary_form=True)
