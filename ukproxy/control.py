"""The control channel between the master and one worker: typed messages (`protocol`) as JSON, one per
line, on a socketpair.

The master sends `Init` first (the validated config text and the worker's place); later messages
carry VM requests and answers, and the worker's heartbeats. EOF means the other side is gone; a line
that is not one of our messages is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import socket
import struct
import termios
import time

from ukproxy.protocol import Init, Message, ProtocolError, from_wire

log = logging.getLogger("ukproxy.control")

MAX_MESSAGE = 4 * 1024 * 1024


def encode(message: Message) -> bytes:
    return json.dumps(message.to_wire(), separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"a control message that is not JSON: {e}") from None
    return from_wire(obj)


def read_init(sock: socket.socket) -> tuple[Init, bytes]:
    """The `Init` message from a blocking socket (the worker's first, before its loop exists), and whatever
    arrived after it: the master may already have sent more, which belongs to the channel's stream."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("control channel closed before a full message")
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            raise ConnectionError("control message too large")
    line, _, rest = bytes(buf).partition(b"\n")
    init = decode(line)
    if not isinstance(init, Init):
        raise ProtocolError(f"the first control message must be init, not {init.TYPE}")
    return init, rest


class _StampedReader(asyncio.StreamReader):
    """Notes when bytes last came off the socket, whether or not anyone has parsed them yet."""

    arrived_at: float | None = None  # monotonic

    def feed_data(self, data: bytes) -> None:
        self.arrived_at = time.monotonic()
        super().feed_data(data)


class ControlChannel:
    """One end of the channel on an event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket, already_read: bytes = b"") -> ControlChannel:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        # asyncio.open_unix_connection, with a reader that stamps what arrives (see `arrived_at`).
        reader = _StampedReader(limit=MAX_MESSAGE, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_unix_connection(lambda: protocol, sock=sock)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if already_read:
            reader.feed_data(already_read)  # comes before anything the transport reads from now on
        return cls(reader, writer)

    @property
    def arrived_at(self) -> float | None:
        """Monotonic time this end last took bytes off the socket (None: nothing yet)."""
        return self.reader.arrived_at  # type: ignore[attr-defined]

    def unread(self) -> bool:
        """Whether the other side sent bytes this end's loop has not taken off the socket yet: it spoke
        after `arrived_at`, and only this side's lateness kept us from hearing it."""
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return False
        with contextlib.suppress(OSError, ValueError):  # closed: nothing waits
            waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
            return struct.unpack("i", waiting)[0] > 0
        return False

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def receive(self) -> Message | None:
        """The next message, or None at EOF."""
        while True:
            try:
                line = await self.reader.readline()
            except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                return None
            if not line:
                return None
            try:
                return decode(line)
            except ProtocolError as e:  # a bug on the other side: say so, and keep the channel
                log.error("control channel: %s", e)

    def close(self) -> None:
        self.writer.close()
