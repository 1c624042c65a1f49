"""What one worker knows about itself on the request path: its connections and its counters.

Per process and unshared (DESIGN rule 1). The accept cycle reads `free_connections`; the metrics
layer reads the counters.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable


class WorkerState:
    def __init__(self, loop: asyncio.AbstractEventLoop, worker_id: int, worker_connections: int):
        self.loop = loop
        self.worker_id = worker_id
        self.worker_connections = worker_connections
        self.clients = 0  # client connections open now
        self.upstreams = 0  # upstream connections open now
        self.accepted = 0
        self.handled = 0
        self.counters: Counter[str] = Counter()
        # Called when a connection closes: the accept cycle may want another turn at the mutex.
        self.on_connection_closed: Callable[[], None] | None = None

    @property
    def free_connections(self) -> int:
        # As Nginx counts it: client and upstream connections share worker_connections.
        return self.worker_connections - self.clients - self.upstreams

    def connection_opened(self) -> None:
        self.clients += 1
        self.handled += 1

    def connection_closed(self) -> None:
        self.clients -= 1
        if self.on_connection_closed is not None:
            self.on_connection_closed()

    def upstream_opened(self) -> None:
        self.upstreams += 1

    def upstream_closed(self) -> None:
        self.upstreams -= 1

    def upstream_failed(self, upstream: str, reason: str) -> None:
        self.counters[f"upstream_failed:{upstream}:{reason}"] += 1

    def no_upstream(self, upstream: str) -> None:
        self.counters[f"no_upstream:{upstream}"] += 1

    def timeout_fired(self, which: str) -> None:
        self.counters[f"timeout:{which}"] += 1
