"""Session ticket keys through OpenSSL's ticket key callback (tls/tickets.py), with real handshakes in
memory between Python's ssl client and server objects: a ticket one "worker" issued resumes on another
holding the same keys, still resumes one rotation later (the previous key decrypts), and no longer after
a second rotation, nor on a listener with another session id context."""

from __future__ import annotations

import contextlib
import ssl

import pytest

from tests.tls.conftest import Certificates
from ukproxy.tls.config import CertificateConfig, TlsConfig
from ukproxy.tls.context import ServerContexts, build_server_contexts
from ukproxy.tls.tickets import SharedTicketKeys, TicketKeyRing, keys_from_wire


def _handshake(server: ServerContexts, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
               ) -> ssl.SSLObject:
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    server_side = server.default.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(6):
        for step in (client.do_handshake, server_side.do_handshake):
            with contextlib.suppress(ssl.SSLWantReadError):
                step()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    with contextlib.suppress(ssl.SSLWantReadError):  # TLS 1.3 tickets come after the handshake: read them
        client.read(1)
    return client


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tickets_resume_across_workers_and_one_rotation(certs: Certificates, version: ssl.TLSVersion) -> None:
    tls = TlsConfig(CertificateConfig(str(certs.ec.cert), str(certs.ec.key), "listen[0]"))
    client = ssl.create_default_context(cafile=str(certs.ca.cert))  # one client context: its sessions are its own
    client.maximum_version = version
    ring = TicketKeyRing()
    worker_a = SharedTicketKeys(keys_from_wire(ring.wire()))
    worker_b = SharedTicketKeys(keys_from_wire(ring.wire()))
    a = build_server_contexts(tls, "127.0.0.1:443", worker_a)
    b = build_server_contexts(tls, "127.0.0.1:443", worker_b)
    assert a.tickets_shared and b.tickets_shared
    first = _handshake(a, client)
    assert not first.session_reused and first.session is not None and first.session.has_ticket
    assert _handshake(b, client, first.session).session_reused  # another worker, the same keys

    ring.rotate()  # the master rotates and tells every worker
    worker_b.update(keys_from_wire(ring.wire()))
    again = _handshake(b, client, first.session)
    assert again.session_reused  # the previous key still decrypts (and a fresh ticket is issued)

    ring.rotate()
    worker_b.update(keys_from_wire(ring.wire()))
    assert not _handshake(b, client, first.session).session_reused  # two rotations on: a full handshake
    assert _handshake(b, client, again.session).session_reused  # the ticket renewed after the first rotation lives

    other_listener = build_server_contexts(tls, "127.0.0.1:8443", worker_b)
    assert not _handshake(other_listener, client, again.session).session_reused  # its own session id context
