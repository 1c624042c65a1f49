"""Raw HTTP/1.1 clients over blocking sockets, for what a library client would never send."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    reason: str = ""
    complete: bool = False
    chunked_on_wire: bool = False
    raw_head_names: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class RawClient:
    """One client connection: send bytes, read whole responses in order (pipelining welcome)."""

    def __init__(self, port: int, timeout: float = 10.0, head_request: bool = False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.current: Response | None = None
        self.eof = False
        self.reset = False
        self._header_name = ""
        self.head_request = head_request

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, data: bytes) -> Response:
        self.send(data)
        return self.responses(1)[0]

    def responses(self, n: int) -> list[Response]:
        """The next n complete responses; fewer if the connection ends first."""
        deadline = time.monotonic() + self.timeout
        while len(self.done) < n and not self.eof:
            self._read(deadline)
        got, self.done = self.done[:n], self.done[n:]
        return got

    def closed(self) -> bool:
        """Wait for the server to close the connection; True when it did within the timeout."""
        deadline = time.monotonic() + self.timeout
        with contextlib.suppress(TimeoutError):
            while not self.eof:
                self._read(deadline)
        return self.eof

    def _read(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = self.reset = True
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise
            return
        if not data:
            self.eof = True
            if self.current is not None and self.current.header("content-length") is None \
                    and not self.current.chunked_on_wire:
                self.current.complete = True  # read until close
                self.done.append(self.current)
                self.current = None
            return
        self.parser.feed_data(data)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = Response(0, [])

    def on_status(self, status: bytes) -> None:
        assert self.current is not None
        self.current.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self.current.chunked_on_wire = True

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()
        if self.head_request:
            self.current.complete = True
            self.done.append(self.current)
            self.current = None

    def on_body(self, data: bytes) -> None:
        if self.current is not None:
            self.current.body += data

    def on_message_complete(self) -> None:
        if self.current is not None and self.current.status >= 200:
            self.current.complete = True
            self.done.append(self.current)
        self.current = None


def get(path: str = "/", host: str = "test", extra: str = "", version: str = "1.1", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Response | None:
    """Send one request on a new connection and read one response (None if the proxy just closed)."""
    with RawClient(port, timeout) as client:
        client.send(data)
        got = client.responses(1)
        return got[0] if got else None


def status_of(port: int, data: bytes, timeout: float = 10.0) -> int | None:
    response = exchange(port, data, timeout)
    return response.status if response else None
