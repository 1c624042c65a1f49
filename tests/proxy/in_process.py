"""An http listener served on the test's own loop, in front of real backends, so a test can read the
worker's state (WorkerState, the upstream group and its servers) while traffic flows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ukproxy.config import loads
from ukproxy.proxy.http import http_protocol_factory
from ukproxy.upstream.group import UpstreamGroup
from ukproxy.worker_state import WorkerState


@dataclass
class InProcessProxy:
    state: WorkerState
    group: UpstreamGroup  # the upstream "app"
    port: int


@contextlib.asynccontextmanager
async def in_process_http(servers: str, extra: str = "") -> AsyncIterator[InProcessProxy]:
    """`servers`: the TOML value of upstream "app"'s servers; `extra`: more of its keys, or tables after it."""
    loop = asyncio.get_running_loop()
    config = loads(f"""
[[listen]]
address = "127.0.0.1:1"  # not bound: the test serves the protocol itself
protocol = "http"
upstream = "app"
[[upstream]]
name = "app"
servers = {servers}
{extra}
""")
    state = WorkerState(loop, 0, 1024)
    groups = {u.name: UpstreamGroup(u, loop) for u in config.upstreams}
    factory = http_protocol_factory(state, config, config.listen[0], groups)

    def accepted() -> asyncio.Protocol:
        state.connection_opened()  # what the accept cycle does
        return factory()

    server = await loop.create_server(accepted, "127.0.0.1", 0)
    try:
        yield InProcessProxy(state, groups["app"], server.sockets[0].getsockname()[1])
    finally:
        server.close()
