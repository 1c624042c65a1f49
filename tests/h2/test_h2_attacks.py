"""The known HTTP/2 attacks, sent as raw frames: each connection gets GOAWAY, the worker lives on, and a
well-behaved client on another connection is still served."""

from __future__ import annotations

import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from tests.h2.client import H2Client
from tests.h2.conftest import H2Site
from tests.observability.helpers import scrape
from tests.waiting import wait_until


def _headers(stream_id: int, path: str, flags: tuple[str, ...]) -> bytes:
    block = hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h2.test"),
                                    (b":path", path.encode())])
    return HeadersFrame(stream_id, data=block, flags=flags).serialize()


def _attack(site: H2Site, frames: bytes) -> H2Client:
    """Send `frames` on a fresh connection in one write and read until the server closes it."""
    attacker = H2Client(site.port)
    try:
        attacker.send_raw(frames)
        attacker.read_until_closed()
    finally:
        attacker.close()
    return attacker


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
    attacker = _attack(site, frames)
    assert attacker.goaway is not None and attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # Opened and reset in the same read, a stream never reaches the upstream.
    assert site.backend.requests[("GET", "/rapid")] < 80
    _goaways(site, "rapid_reset", 1)
    _still_serving(site, workers, "/after-rapid-reset")


def test_continuation_flood(site: H2Site) -> None:
    """A header block that never ends: bounded by http2_max_header_list_size (4k), not by the frames' count."""
    workers = site.worker_pids()
    frames = _headers(1, "/cont", ("END_STREAM",)) + b"".join(
        ContinuationFrame(1, data=b"\x40\x01a\x81" + b"b" * 1000).serialize() for _ in range(40))
    attacker = _attack(site, frames)
    assert attacker.goaway is not None and attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    _goaways(site, "header_flood", 1)
    _still_serving(site, workers, "/after-continuation-flood")


def test_settings_flood(site: H2Site) -> None:
    workers = site.worker_pids()
    attacker = _attack(site, b"".join(SettingsFrame(0, settings={4: 65535}).serialize() for _ in range(300)))
    assert attacker.goaway is not None and attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    _goaways(site, "control_flood", 1)
    _still_serving(site, workers, "/after-settings-flood")


def test_ping_flood(site: H2Site) -> None:
    workers = site.worker_pids()
    attacker = _attack(site, b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(300)))
    assert attacker.goaway is not None and attacker.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    _still_serving(site, workers, "/after-ping-flood")
