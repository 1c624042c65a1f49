"""client_body_timeout per HTTP/2 stream: a body that stops coming gets a 408, an answer whose window the
client leaves shut is reset, and the connection's other streams go on."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import h2.settings
from h2.errors import ErrorCodes

from tests.h2.client import H2Client, StreamResult
from tests.h2.conftest import h2_config
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until


def test_stalled_body_gets_408_and_a_shut_window_a_reset(ukproxy: Callable[..., RunningProxy], tmp_path: Path) -> None:
    backend = Backend("h2-backend")
    try:
        port, metrics_port = free_port(), free_port()
        config = h2_config(port, metrics_port, backend, tmp_path / "access.log")
        proxy = ukproxy(config.replace("[http]\n", '[http]\nclient_body_timeout = "1s"\n'))
        proxy.start(wait_ports=[port], expect_workers=1)
        client = H2Client(port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024}, auto_window=False)
        try:
            # A body that stops after 5 of its 10 bytes.
            slow_body = client.conn.get_next_available_stream_id()
            client.conn.send_headers(slow_body, [(b":method", b"POST"), (b":scheme", b"http"),
                                                 (b":authority", b"h2.test"), (b":path", b"/sha"),
                                                 (b"content-length", b"10")])
            client.conn.send_data(slow_body, b"12345")
            client.flush()
            client.streams[slow_body] = StreamResult()
            # An answer far past the 1 KiB window we never open again.
            shut = client.request("/bytes/300000")
            client.until(lambda: client.streams[slow_body].headers.get(b":status") == b"408"
                         and client.streams[shut].reset is not None, "the 408 and the reset", timeout=20)
            assert client.streams[shut].reset == ErrorCodes.CANCEL
            assert len(client.streams[shut].body) == 1024
            # The connection itself goes on (a short answer fits in the 1 KiB window).
            ok = client.request("/after")
            client.until(lambda: client.streams[ok].ended, "a new stream's answer")
            assert bytes(client.streams[ok].body) == b"h2-backend GET /after"
        finally:
            client.close()
        # A client that reads none of the connection's bytes (windows wide open): the connection is cut.
        wide = H2Client(port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        try:
            wide.conn.increment_flow_control_window(2**31 - 1 - 65535)
            wide.request("/bytes/16000000")  # past what the sockets buffer
            wait_until(lambda: "http2: " in proxy.log() and "took none of our writes" in proxy.log(),
                       "the stalled connection cut off")
            received = 0  # the bytes the proxy got out before the cut, frames unparsed
            with contextlib.suppress(ConnectionResetError):
                while chunk := wide.sock.recv(1 << 20):
                    received += len(chunk)
            assert received < 16_000_000
        finally:
            wide.close()
        assert backend.requests[("POST", "/sha")] <= 1  # it may have reached the backend; it got no answer from it
    finally:
        backend.close()
