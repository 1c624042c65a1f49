"""The access log: one line per HTTP request or TCP session, buffered, flushed without stalling the loop.

Formats: nginx's `combined` plus the upstream's address and times as key=value fields, or JSON
lines (`access_format = "json"`). Lines are kept in memory and written with one O_APPEND
write() when 64 KiB have gathered, a second after the first buffered line, or on stop and
reopen, so several workers appending to one file never split each other's lines and a request
never waits for the disk. `reopen()` (SIGUSR1) writes what is buffered to the old file, then
opens the configured path again: logrotate moves the file, signals, and new lines land in a new one.

combined, http: 127.0.0.1 - - [28/Nov/2026:02:36:21 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8" \
upstream="10.77.0.10:80" upstream_time=0.003 request_time=0.004 tls=TLSv1.3   (tls= only over TLS)
combined, tcp:  127.0.0.1 - - [28/Nov/2026:02:36:21 +0000] "TCP 127.0.0.1:8080" 200 512 "-" "-" \
upstream="127.0.0.1:9000" upstream_connect_time=0.001 session_time=1.250 bytes_received=512
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from ukproxy.config import LogConfig

log = logging.getLogger("ukproxy.access_log")

FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 1.0


def _escape(text: str) -> str:
    """Quoted fields, as nginx escapes them: '"', '\\' and non-printable characters as \\xHH."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' else "".join(f"\\x{b:02X}" for b in c.encode())
                   for c in text)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class _LocalTime:
    """nginx's $time_local, formatted once per second rather than per line."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
        return self.text


class AccessLog:
    def __init__(self, path: str, json_lines: bool, loop: asyncio.AbstractEventLoop):
        self.path = os.path.abspath(path)  # relative paths are taken from the directory ukproxy runs in
        self.json_lines = json_lines
        self.loop = loop
        self.buffer: list[str] = []
        self.buffered = 0
        self.timer: asyncio.TimerHandle | None = None
        self.clock = _LocalTime()
        self.fd = -1
        self.open()

    @classmethod
    def from_config(cls, config: LogConfig, loop: asyncio.AbstractEventLoop) -> AccessLog | None:
        if config.access_log == "off":
            return None
        return cls(config.access_log, config.access_format == "json", loop)

    # lines

    def request(self, listener: str, upstream: str | None, status: int, request_time: float,
                upstream_time: float | None, upstream_addr: str | None, method: str, uri: str, client: str,
                bytes_sent: int, user_agent: str | None, referer: str | None, request_id: str | None = None,
                protocol: str = "-", tls_version: str | None = None) -> None:
        """`request_id`: with [request_id] or a rule's $request_id (edge/), else left out of the line.
        `protocol`: "HTTP/1.1" and the like; `tls_version`: "TLSv1.3" and the like, None on a plain connection."""
        if self.json_lines:
            fields = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "remote_addr": client, "protocol": "http",
                "listener": listener, "upstream": upstream, "method": method, "uri": uri,
                "server_protocol": protocol, "tls": tls_version, "status": status,
                "bytes_sent": bytes_sent, "referer": referer, "user_agent": user_agent,
                "upstream_addr": upstream_addr, "upstream_time": upstream_time, "request_time": request_time,
            }
            if request_id is not None:
                fields["request_id"] = request_id
            line = json.dumps(fields, separators=(",", ":"))
        else:
            line = (f'{client} - - [{self.clock.now()}] "{_escape(method)} {_escape(uri)} {protocol}" {status} '
                    f'{bytes_sent} "{_escape(referer or "-")}" "{_escape(user_agent or "-")}" '
                    f'upstream="{upstream_addr or "-"}" '
                    f"upstream_time={_seconds(upstream_time)} request_time={_seconds(request_time)}")
            if request_id is not None:
                line += f" request_id={_escape(request_id)}"
            if tls_version is not None:
                line += f" tls={tls_version}"
        self._append(line)

    def tcp_session(self, listener: str, upstream: str, status: int, session_time: float,
                    connect_time: float | None, upstream_addr: str | None, client: str,
                    bytes_sent: int, bytes_received: int) -> None:
        if self.json_lines:
            line = json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "remote_addr": client, "protocol": "tcp",
                "listener": listener, "upstream": upstream, "status": status, "bytes_sent": bytes_sent,
                "bytes_received": bytes_received, "upstream_addr": upstream_addr,
                "upstream_connect_time": connect_time, "session_time": session_time,
            }, separators=(",", ":"))
        else:
            line = (f'{client} - - [{self.clock.now()}] "TCP {listener}" {status} {bytes_sent} "-" "-" '
                    f'upstream="{upstream_addr or "-"}" upstream_connect_time={_seconds(connect_time)} '
                    f"session_time={_seconds(session_time)} bytes_received={bytes_received}")
        self._append(line)

    def _append(self, line: str) -> None:
        self.buffer.append(line)
        self.buffered += len(line) + 1
        if self.buffered >= FLUSH_BYTES:
            self.flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(FLUSH_INTERVAL, self.flush)

    # the file

    def open(self) -> None:
        self.fd = self._open_path()

    def _open_path(self) -> int:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            log.error("cannot open the access log %s: %s", self.path, e.strerror)
            return -1

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.buffer:
            return
        data = ("\n".join(self.buffer) + "\n").encode("utf-8", "backslashreplace")
        self.buffer.clear()
        self.buffered = 0
        if self.fd < 0:
            return
        try:
            # One write() per flush: regular files take it whole, so workers' lines never interleave.
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            log.error("access log %s: write failed, %d bytes lost: %s", self.path, len(view), e.strerror)

    def reopen(self) -> None:
        """logrotate: finish the old file, then open the configured path (a new file if it was moved).
        If the path cannot be opened, the old file is kept: lines are better late than lost."""
        self.flush()
        fd = self._open_path()
        if fd >= 0:
            self._close_fd()
            self.fd = fd

    def close(self) -> None:
        self.flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
