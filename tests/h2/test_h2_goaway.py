"""Graceful reload with HTTP/2: the old worker says GOAWAY, the stream in flight finishes, new streams go to
the new worker. The client is nghttp (nghttp2's), which prints every frame it receives; the backend holds its
answer until the old worker has begun its graceful stop, so the stream is in flight when GOAWAY goes."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from tests.h2.client import H2Client
from tests.h2.conftest import h2_config
from tests.proxy.backends import RawBackend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until


def test_reload_sends_goaway_and_the_stream_in_flight_finishes(ukproxy: Callable[..., RunningProxy],
                                                               tmp_path: Path) -> None:
    release = threading.Event()
    held = threading.Event()

    def answer(conn: socket.socket, count: int) -> None:
        while True:  # one keep-alive connection may carry several requests
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            if head.startswith(b"GET /held "):
                held.set()
                release.wait(30)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(answer)
    try:
        port, metrics_port = free_port(), free_port()
        proxy = ukproxy(h2_config(port, metrics_port, backend, tmp_path / "access.log"))
        proxy.start(wait_ports=[port], expect_workers=1)
        old = {w.pid for w in proxy.workers()}
        nghttp = subprocess.Popen(["nghttp", "-v", "-n", "-t", "40", f"http://127.0.0.1:{port}/held"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(held.is_set, "the request held at the backend")
            proxy.signal(signal.SIGHUP)
            wait_until(lambda: "graceful stop" in proxy.log(), "the old worker's graceful stop", timeout=30)
            release.set()
            out, _ = nghttp.communicate(timeout=30)
        finally:
            release.set()
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
