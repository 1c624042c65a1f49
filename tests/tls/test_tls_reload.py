"""`ukproxy reload` with a renewed certificate: new handshakes get it, a connection opened before finishes
its requests on the old one, and a session from before the reload resumes on the new worker processes
(the master's ticket keys outlive workers)."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.clients import s_client
from tests.tls.conftest import Certificates
from tests.waiting import wait_until


def _get(conn: ssl.SSLSocket, path: str) -> bytes:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n")[0] + b" " + body


def test_reload_swaps_the_certificate_without_dropping_connections(tmp_path: Path, certs: Certificates) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(certs.ec.cert, live_cert)
    shutil.copy(certs.ec.key, live_key)
    backend = Backend("app")
    port = free_port()
    proxy = RunningProxy(tmp_path, f"""
workers = 1
[metrics]
enabled = false
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
ssl = true
ssl_certificate = "{live_cert}"
ssl_certificate_key = "{live_key}"
[[upstream]]
name = "app"
servers = ["{backend.address}"]
""", "reload").start([port], expect_workers=1)
    try:
        old_pids = {w.pid for w in proxy.workers()}
        session = tmp_path / "session.pem"
        before = s_client(port, certs.ca.cert, "-sess_out", str(session))
        assert before.done and not before.reused
        context = ssl.create_default_context(cafile=str(certs.ca.cert))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as open_conn:
            old_cert = open_conn.getpeercert(binary_form=True)
            assert _get(open_conn, "/one").endswith(b"app GET /one")
            # the renewal: new files in place, then reload
            shutil.copy(certs.renewed.cert, live_cert)
            shutil.copy(certs.renewed.key, live_key)
            reload = proxy.cli("reload")
            assert reload.returncode == 0, reload.stderr + proxy.log()
            proxy.wait_workers(1, exclude=old_pids)
            assert f"listen[0].ssl_certificate: the certificate in {live_cert} expires in 9 days" in proxy.log()
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
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        return conn.getpeercert(binary_form=True)
