"""A request's body on its way upstream: what waits for a connection, and what was sent and is kept for a retry.

The body is kept framed as it goes upstream (chunked again when it came chunked). What was sent is kept
only while a replay is possible: an idempotent request whose body fits in `REPLAY_LIMIT`. What waits is
counted so that the client's reading pauses above `PENDING_HIGH`; the bytes after an upgrade request
(the tunnel's first) wait here too, until the upstream agrees to switch.
"""

from __future__ import annotations

from typing import Final

from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_request import IDEMPOTENT, RequestHead

REPLAY_LIMIT: Final = 256 * 1024  # request body kept for a retry; past it the request cannot be replayed
PENDING_HIGH: Final = 64 * 1024  # request body waiting for an upstream connection before the client is paused


class RequestBody:
    replay_size = 0
    held_size = 0  # bytes waiting (body or upgrade tail), for the client's flow control

    def __init__(self, head: RequestHead):
        self.chunked = head.chunked
        self.done = not head.has_body  # the client sent all of it
        self.pending: list[bytes] = []  # framed body not yet sent
        # Framed body already sent, for a replay; None once no replay is possible (not idempotent, too large,
        # or the response began).
        self.replay: list[bytes] | None = [] if head.method in IDEMPOTENT else None
        self.upgrade_tail: list[bytes] = []

    @property
    def replayable(self) -> bool:
        return self.replay is not None

    @property
    def all_sent(self) -> bool:
        """Did the upstream get the whole body? (If not, its connection is in an unknown state.)"""
        return self.done and not self.pending

    def frame(self, data: bytes) -> bytes:
        return msg.chunk(data) if self.chunked else data

    def end(self) -> bytes | None:
        """The client's body is complete: the framing that ends it upstream, if any."""
        self.done = True
        return msg.LAST_CHUNK if self.chunked else None

    def hold(self, framed: bytes) -> bool:
        """Keep body bytes until there is a connection. True when the client should stop sending for now."""
        self.pending.append(framed)
        self.held_size += len(framed)
        return self.held_size > PENDING_HIGH

    def hold_tail(self, data: bytes) -> bool:
        """Keep bytes sent after an upgrade request until the 101. True when the client should stop sending."""
        self.upgrade_tail.append(data)
        self.held_size += len(data)
        return self.held_size > PENDING_HIGH

    def take_tail(self) -> list[bytes]:
        tail, self.upgrade_tail = self.upgrade_tail, []
        return tail

    def forget_held(self) -> bool:
        """What was held is on its way: True if there was any (the client may be paused for it)."""
        if self.held_size:
            self.held_size = 0
            return True
        return False

    def sent(self, framed: list[bytes]) -> None:
        """Body bytes went upstream: keep them for a replay while that is possible."""
        if self.replay is not None and framed:
            size = sum(map(len, framed))
            if self.replay_size + size > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay.extend(framed)
                self.replay_size += size

    def with_head(self, head: bytes) -> bytes:
        """An attempt's first write: `head`, what an earlier attempt sent, and what waited (sent from now on)."""
        parts = [head]
        if self.replay:
            parts.extend(self.replay)
        pending, self.pending = self.pending, []
        parts.extend(pending)
        self.sent(pending)
        return b"".join(parts)

    def stop_replay(self) -> None:
        """The response began: there will be no replay."""
        self.replay = None
