"""Graceful reload with HTTP/2: the old worker says GOAWAY, the stream in flight finishes, new streams go to
the new worker. The client is nghttp (nghttp2's), which prints every frame it receives."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.h2.client import H2Client
from tests.h2.conftest import h2_config
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until


def test_reload_sends_goaway_and_the_stream_in_flight_finishes(ukproxy: Callable[..., RunningProxy],
                                                               tmp_path: Path) -> None:
    backend = Backend("h2-backend")
    try:
        port, metrics_port = free_port(), free_port()
        proxy = ukproxy(h2_config(port, metrics_port, backend, tmp_path / "access.log"))
        proxy.start(wait_ports=[port], expect_workers=1)
        old = {w.pid for w in proxy.workers()}
        nghttp = subprocess.Popen(["nghttp", "-v", "-n", "-t", "20", f"http://127.0.0.1:{port}/sleep/1.5"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: backend.requests[("GET", "/sleep/1.5")] == 1, "the slow request upstream")
            proxy.signal(signal.SIGHUP)
            out, _ = nghttp.communicate(timeout=30)
        finally:
            if nghttp.poll() is None:
                nghttp.kill()
                nghttp.wait()
        assert nghttp.returncode == 0, out
        status = re.search(r"recv \(stream_id=(\d+)\) :status: (\d+)", out)
        assert status is not None and status[2] == "200", out
        goaway = re.search(r"recv GOAWAY frame .*\n.*last_stream_id=(\d+), error_code=NO_ERROR", out)
        assert goaway is not None and int(goaway[1]) >= int(status[1]), out  # our stream is one that finishes
        # The answer came after the GOAWAY: the stream in flight was let finish.
        assert goaway.start() < status.start(), out
        proxy.wait_workers(1, exclude=old)
        fresh = H2Client(port)
        try:
            assert fresh.get("/after").headers[b":status"] == b"200"
        finally:
            fresh.close()
    finally:
        backend.close()
