"""One TAP made ahead of need, so a VM booted on demand does not wait for it.

Making a TAP on the bridge takes several netlink round trips on a fresh connection into the
backend namespace: 50-200 ms, about as long as the VM's whole boot. The fleet keeps one spare,
made in the background while nothing waits; a launch takes it and the next spare is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge import BackendNetwork

log = logging.getLogger("ukproxy.fleet")


class SpareTap:
    def __init__(self, network: BackendNetwork):
        from bridge import tap_name

        self.network = network
        self._names = (tap_name(n) for n in itertools.count(1))
        self._making: asyncio.Task[str] | None = None

    def prepare(self) -> None:
        """Start making the next spare (once)."""
        if self._making is None:
            self._making = asyncio.get_running_loop().create_task(self._make(next(self._names)))

    async def _make(self, name: str) -> str:
        await self.network.add_tap_async(name)
        return name

    async def take(self) -> str:
        """A TAP on the bridge, up, for one VM: the spare (waiting for it if it is still being made)."""
        self.prepare()
        assert self._making is not None
        making, self._making = self._making, None
        try:
            return await making
        finally:
            self.prepare()  # the next launch's, made while this VM boots

    async def close(self) -> None:
        """Remove the spare (it belongs to no VM)."""
        making, self._making = self._making, None
        if making is None:
            return
        with contextlib.suppress(Exception):  # a TAP half made is gone with the namespace anyway
            name = await asyncio.wait_for(making, 10.0)
            await self.network.remove_tap_async(name)
