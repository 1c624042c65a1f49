"""The known HTTP/2 attacks, sent as raw frames: each connection gets GOAWAY, the worker lives on, and a
well-behaved client on another connection is still served."""

from __future__ import annotations

import contextlib
import socket

import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from tests.h2.client import H2Client
from tests.h2.conftest import H2Site
from tests.observability.helpers import scrape
from tests.waiting import wait_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _headers(stream_id: int, path: str, flags: tuple[str, ...]) -> bytes:
    block = hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h2.test"),
                                    (b":path", path.encode())])
    return HeadersFrame(stream_id, data=block, flags=flags).serialize()


def _attack(site: H2Site, frames: bytes) -> GoAwayFrame | None:
    """The preface, an empty SETTINGS and `frames` on a fresh connection in one write, by a client that answers
    nothing (not even the server's SETTINGS); read until the server closes. The GOAWAY it sent, if any."""
    with socket.create_connection(("127.0.0.1", site.port), timeout=15) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + frames)
        received = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                received += data
    goaway = None
    while len(received) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(received[:9]))
        if len(received) < 9 + length:
            break
        frame.parse_body(memoryview(received[9:9 + length]))
        del received[:9 + length]
        if isinstance(frame, GoAwayFrame):
            goaway = frame
    return goaway


def _still_serving(site: H2Site, workers: set[int], path: str) -> None:
    assert site.worker_pids() == workers, "the worker died"
    client = H2Client(site.port)
    try:
        answer = client.get(path)
        assert answer.headers[b":status"] == b"200" and bytes(answer.body) == f"h2-backend GET {path}".encode()
    finally:
        client.close()


def _goaways(site: H2Site, reason: str, at_least: float) -> None:
    wait_until(lambda: scrape(site.metrics_port), f"GOAWAY for {reason} in /metrics",
               accept=lambda p: p.value("ukproxy_http2_goaways_total", reason=reason) >= at_least)


def test_rapid_reset(site: H2Site) -> None:
    """CVE-2023-44487: streams opened and cancelled at once, past http2_max_resets (50)."""
    workers = site.worker_pids()
    frames = b"".join(_headers(i, "/rapid", ("END_HEADERS", "END_STREAM")) + RstStreamFrame(i, error_code=8).serialize()
                      for i in range(1, 2 * 80, 2))
    goaway = _attack(site, frames)
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, goaway
    # Opened and reset in the same read, a stream never reaches the upstream.
    assert site.backend.requests[("GET", "/rapid")] < 80
    _goaways(site, "rapid_reset", 1)
    _still_serving(site, workers, "/after-rapid-reset")


def test_continuation_flood(site: H2Site) -> None:
    """A header block that never ends: bounded by http2_max_header_list_size (4k), not by the frames' count."""
    workers = site.worker_pids()
    frames = _headers(1, "/cont", ("END_STREAM",)) + b"".join(
        ContinuationFrame(1, data=b"\x40\x01a\x81" + b"b" * 1000).serialize() for _ in range(40))
    goaway = _attack(site, frames)
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, goaway
    _goaways(site, "header_flood", 1)
    _still_serving(site, workers, "/after-continuation-flood")


def test_settings_flood(site: H2Site) -> None:
    workers = site.worker_pids()
    goaway = _attack(site, b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(300)))
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, goaway
    _goaways(site, "control_flood", 1)
    _still_serving(site, workers, "/after-settings-flood")


def test_ping_flood(site: H2Site) -> None:
    workers = site.worker_pids()
    goaway = _attack(site, b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(300)))
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM, goaway
    _still_serving(site, workers, "/after-ping-flood")


def test_a_stream_past_the_announced_limit_is_refused_alone(site: H2Site) -> None:
    """http2_max_concurrent_streams (16): a 17th stream open at once gets RST_STREAM REFUSED_STREAM (a stream
    error, RFC 9113 5.1.2); the 16 others are answered on the same connection."""
    frames = b"".join(_headers(i, "/sleep/0.5", ("END_HEADERS", "END_STREAM")) for i in range(1, 2 * 17, 2))
    with socket.create_connection(("127.0.0.1", site.port), timeout=15) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize() + frames)
        statuses: dict[int, str] = {}
        resets: dict[int, int] = {}
        buffer = bytearray()
        decoder = hpack.Decoder()
        while len(statuses) + len(resets) < 17:
            data = sock.recv(65536)
            assert data, f"closed with {statuses} answered and {resets} reset"
            buffer += data
            while len(buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9:9 + length]))
                del buffer[:9 + length]
                if isinstance(frame, HeadersFrame):
                    statuses[frame.stream_id] = dict(decoder.decode(frame.data, raw=True))[b":status"].decode()
                elif isinstance(frame, RstStreamFrame):
                    resets[frame.stream_id] = frame.error_code
                assert not isinstance(frame, GoAwayFrame), frame
    assert resets == {33: ErrorCodes.REFUSED_STREAM}
    assert sorted(statuses) == list(range(1, 33, 2)) and set(statuses.values()) == {"200"}
