"""The control channel between the master and one worker: JSON messages, one per line, on a socketpair.

The master sends `init` first (the validated config text and the worker's place); later messages
carry VM requests and answers. EOF means the other side is gone.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

MAX_MESSAGE = 4 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def read_blocking(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """One message from a blocking socket (the worker's `init`, before its loop exists), and whatever
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
    return json.loads(line), rest


class ControlChannel:
    """One end of the channel on an event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, sock: socket.socket, already_read: bytes = b"") -> ControlChannel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE)
        if already_read:
            reader.feed_data(already_read)  # comes before anything the transport reads from now on
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        try:
            line = await self.reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return None
        if not line:
            return None
        return json.loads(line)

    def close(self) -> None:
        self.writer.close()
