"""A small blocking HTTP/2 client on the `h2` library, for what curl and h2load will not do: misbehave on
purpose (floods), hold a window shut, or watch for GOAWAY while a request is in flight."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class StreamResult:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


class H2Client:
    """One cleartext connection with prior knowledge. `settings`: our SETTINGS (a small INITIAL_WINDOW_SIZE
    to test the server's flow control); `auto_window`: give window back as data comes (else `open_window`)."""

    def __init__(self, port: int, settings: dict[int, int] | None = None, auto_window: bool = True,
                 check_headers: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # check_headers=False: send header lists as given, malformed ones too
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_outbound_headers=check_headers,
                                           normalize_outbound_headers=check_headers)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.auto_window = auto_window
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        """Bytes past the state machine: frames h2 would refuse to send (floods)."""
        self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: list[tuple[bytes, bytes]] | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        head = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"h2.test"),
                (b":path", path.encode()), *(headers or [])]
        self.conn.send_headers(stream_id, head, end_stream=body is None)
        self.streams[stream_id] = StreamResult()
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    def read_once(self, timeout: float = 10.0) -> bool:
        """One read and its events; False when the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._event(event)
        self.flush()
        return True

    def _event(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived) and stream is not None:
            stream.body += event.data
            if self.auto_window:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({k: v.new_value for k, v in event.changed_settings.items()})

    def open_window(self, stream_id: int, size: int) -> None:
        self.conn.increment_flow_control_window(size, stream_id)
        self.conn.increment_flow_control_window(size)
        self.flush()

    def until(self, done: callable, what: str, timeout: float = 15.0) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"gave up after {timeout}s waiting for {what}")
            if not self.read_once(left):
                if done():
                    return
                raise AssertionError(f"connection closed while waiting for {what}")

    def get(self, path: str, **kwargs: object) -> StreamResult:
        stream_id = self.request(path, **kwargs)  # type: ignore[arg-type]
        result = self.streams[stream_id]
        self.until(lambda: result.ended or result.reset is not None, f"the answer to {path}")
        return result

    def read_until_closed(self, timeout: float = 15.0) -> None:
        """Read (and answer) until the server closes; a reset while we still write also ends it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.read_once(deadline - time.monotonic()):
                    return
            except h2.exceptions.ProtocolError:
                return  # frames after its GOAWAY: the server is done with us
        raise AssertionError(f"the server kept the connection open for {timeout}s")

    def close(self) -> None:
        self.sock.close()
