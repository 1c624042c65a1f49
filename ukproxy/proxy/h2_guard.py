"""The budgets one HTTP/2 connection gets for what costs us work and gives a client nothing (docs/architecture.md).

Known attacks on HTTP/2 servers send cheap frames that make the server work: streams opened and reset at
once (rapid reset, CVE-2023-44487: each one starts a request upstream), SETTINGS and PING frames (each
asks for an acknowledgement), PRIORITY, empty DATA and unknown frames (CVE-2019-9512/9515/9518). A
connection may send `http2_max_resets` resets and `http2_max_control_frames` of the others per
`http2_flood_window`; past either budget it gets GOAWAY (ENHANCE_YOUR_CALM) and is closed. The window is
fixed (counts start again when it has passed), which is all a budget this coarse needs.
CONTINUATION floods are bounded where the header block is held (h2_connection), not here.
"""

from __future__ import annotations

from ukproxy.config import HttpConfig

RAPID_RESET = "rapid_reset"
CONTROL_FLOOD = "control_flood"


class FloodGuard:
    __slots__ = ("control", "max_control", "max_resets", "resets", "window", "window_ends")

    def __init__(self, limits: HttpConfig, now: float):
        self.max_resets = limits.http2_max_resets
        self.max_control = limits.http2_max_control_frames
        self.window = limits.http2_flood_window
        self.window_ends = now + self.window
        self.resets = 0
        self.control = 0

    def _roll(self, now: float) -> None:
        if now >= self.window_ends:
            self.window_ends = now + self.window
            self.resets = 0
            self.control = 0

    def reset(self, now: float) -> str | None:
        """A stream reset by the client: the reason to close the connection, if it is over its budget."""
        self._roll(now)
        self.resets += 1
        return RAPID_RESET if self.resets > self.max_resets else None

    def control_frame(self, now: float, n: int = 1) -> str | None:
        self._roll(now)
        self.control += n
        return CONTROL_FLOOD if self.control > self.max_control else None
