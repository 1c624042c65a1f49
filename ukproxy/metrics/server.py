"""The master's observability listener: GET /metrics (Prometheus text) and GET /status (JSON, or a page
for a browser: `status_page.py`).

An aiohttp server on the master's own loop and address ([metrics] listen, default
127.0.0.1:9145), off the data path: workers never serve it, so it answers however busy they are.
Both pages are made from the multiprocess files at request time (a few milliseconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ukproxy.metrics.files import MetricFiles
from ukproxy.metrics.master_collector import MasterCollector
from ukproxy.metrics.multiproc import ServerExists
from ukproxy.status_page import prefers_html, refresh_seconds, render

log = logging.getLogger("ukproxy.metrics")

T = TypeVar("T")
READ_ATTEMPTS = 5


class MetricsServer:
    def __init__(self, directory: str, master_collector: MasterCollector, status: Callable[[list[Any]], dict],
                 server_exists: ServerExists = lambda upstream, server: True):
        self.directory = directory
        self.registry = CollectorRegistry()
        self.files = MetricFiles(self.registry, self.directory, server_exists)
        self.registry.register(master_collector)
        self.status = status
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._index)
        # A scraper's keep-alive connection must not hold up a stop.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError:
            await runner.cleanup()
            raise
        self.runner = runner

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._read_files(lambda: generate_latest(self.registry))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        families = await self._read_files(lambda: list(self.files.collect()))
        status = self.status(families)
        headers = {"Vary": "Accept", "Cache-Control": "no-store"}
        if prefers_html(request.headers.get("Accept")):
            page = render(status, refresh_seconds(request.query.get("refresh")))
            return web.Response(text=page, content_type="text/html", headers=headers)
        return web.Response(text=json.dumps(status, indent=1) + "\n", content_type="application/json",
                            headers=headers)

    @staticmethod
    async def _read_files(read: Callable[[], T]) -> T:
        """Files are read while processes write them: a transient inconsistency is tried again
        shortly rather than answered with a 500."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return read()
            except (struct.error, RuntimeError, ValueError):
                if attempt == READ_ATTEMPTS - 1:
                    log.exception("metrics: cannot read the metric files")
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="ukproxy: /metrics (Prometheus), /status (JSON; a page in a browser)\n")
