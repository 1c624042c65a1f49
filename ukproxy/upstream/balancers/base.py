"""What every balancing method shares: primaries before backups, availability, ``tried``."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar

from ukproxy.upstream.server import Server


class Balancer(ABC):
    """Picks one server among ``servers`` for a request or connection.

    Backup servers are considered only when no primary is available (and not yet tried).
    A group of one server ignores passive health (see ``_pick_single``).
    A subclass implements ``_choose`` over the available candidates of one tier, or
    overrides ``_pick_in_tier`` when it needs to see unavailable servers too (hashing).
    """

    method: ClassVar[str] = ""  # ClassVar: compiled by mypyc, a plain annotation would be per instance

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers: list[Server] = []
        self.primaries: list[Server] = []
        self.backups: list[Server] = []
        self.set_servers(servers)

    def set_servers(self, servers: Sequence[Server]) -> None:
        """Membership change. Live state lives on the Server objects, so passing the same
        objects again keeps it; subclasses keep their own per-server state for survivors."""
        self.servers = list(servers)
        self.primaries = [s for s in self.servers if not s.backup]
        self.backups = [s for s in self.servers if s.backup]
        self._servers_changed()

    def _servers_changed(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook for subclasses that index the servers."""

    def pick(
        self,
        key: bytes | str | None = None,
        tried: Collection[Server] = (),
        now: float | None = None,
    ) -> Server | None:
        """The server for the next request, or None when none is available.

        ``key`` is the hash key (hash, ip_hash); other methods ignore it. Servers in ``tried``
        are never returned. ``now`` defaults to ``time.monotonic()``.
        """
        if now is None:
            now = time.monotonic()
        if len(self.servers) == 1:
            return self._pick_single(self.servers[0], tried, now)
        for backup, tier in ((False, self.primaries), (True, self.backups)):
            if not tier:
                continue
            server = self._pick_in_tier(tier, backup, key, tried, now)
            if server is not None:
                server.selected(now)
                return server
        return None

    @staticmethod
    def _pick_single(server: Server, tried: Collection[Server], now: float) -> Server | None:
        # As nginx: the only server of a group is never taken out by passive health
        # (max_fails/fail_timeout); that would turn a passing failure into errors for
        # fail_timeout with nowhere else to go. down, health checks and max_conns still apply.
        if server.down or not server.health_ok or server.at_max_conns() or server in tried:
            return None
        server.selected(now)
        return server

    def _pick_in_tier(
        self,
        tier: list[Server],
        backup: bool,
        key: bytes | str | None,
        tried: Collection[Server],
        now: float,
    ) -> Server | None:
        candidates = available_candidates(tier, tried, now)
        if not candidates:
            return None
        return self._choose(candidates, key)

    @abstractmethod
    def _choose(self, candidates: list[Server], key: bytes | str | None) -> Server:
        """One of ``candidates`` (non-empty, all available and untried)."""


def available_candidates(tier: Sequence[Server], tried: Collection[Server], now: float) -> list[Server]:
    if tried:
        return [s for s in tier if s.available(now) and s not in tried]
    return [s for s in tier if s.available(now)]
