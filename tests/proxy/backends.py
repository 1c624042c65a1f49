"""Real local backends for the http proxy tests: an aiohttp app and a raw-socket server, each in its own thread.

Both listen on 127.0.0.1 and remember what they saw (connections, requests), so tests can assert on
behaviour visible at the backend: connection reuse, retries, the headers that arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import WSMsgType, web


def pattern(n: int, seed: int = 0) -> bytes:
    """n deterministic, non-repeating-looking bytes (so a misplaced slice shows)."""
    block = hashlib.sha256(b"%d" % seed).digest() * 8
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(block + b"%d" % i).digest() * 64
        i += 1
    return bytes(out[:n])


class Backend:
    """An aiohttp application in a thread of its own; `name` tells backends apart in answers."""

    def __init__(self, name: str = "backend", host: str = "127.0.0.1"):
        self.name = name
        self.host = host  # another than loopback: made from a thread in that address's namespace
        self.transports: set[object] = set()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.last_headers: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._holds: dict[str, asyncio.Event] = {}  # /hold/<key> answers once its key is released
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("backend did not start")

    @property
    def connections(self) -> int:
        return len(self.transports)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def total(self, method: str | None = None) -> int:
        return sum(n for (m, _), n in self.requests.items() if method is None or m == method)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1 << 30, middlewares=[self._record])
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/sha", self._sha)
        app.router.add_get("/bytes/{n}", self._bytes)
        app.router.add_get("/chunks/{n}", self._chunks)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_get("/sleep/{seconds}", self._sleep)
        app.router.add_get("/hold/{key}", self._hold)
        app.router.add_route("*", "/headers", self._headers)
        app.router.add_get("/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._default)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def release(self, key: str) -> None:
        """Answer every request for /hold/<key>, the waiting ones and any later one."""
        self.loop.call_soon_threadsafe(lambda: self._hold_event(key).set())

    def close(self) -> None:
        if self._stop is not None:
            for key in list(self._holds):  # a held request would keep the server's shutdown waiting
                self.release(key)
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.transports.add(request.transport)
        self.requests[(request.method, request.path)] += 1
        self.last_headers = list(request.headers.items())
        return await handler(request)

    async def _default(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=f"{self.name} {request.method} {request.path_qs}")

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for data in request.content.iter_chunked(65536):
            await response.write(data)
        await response.write_eof()
        return response

    async def _sha(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for data in request.content.iter_chunked(65536):
            digest.update(data)
            size += len(data)
        return web.Response(text=f"{size} {digest.hexdigest()}")

    async def _bytes(self, request: web.Request) -> web.Response:
        return web.Response(body=pattern(int(request.match_info["n"])))

    async def _chunks(self, request: web.Request) -> web.StreamResponse:
        body = pattern(int(request.match_info["n"]))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(body), 100_000):
            await response.write(body[i:i + 100_000])
        await response.write_eof()
        return response

    async def _status(self, request: web.Request) -> web.Response:
        await request.read()
        code = int(request.match_info["code"])
        return web.Response(status=code, text=None if code in (204, 304) else f"{self.name} status {code}")

    async def _sleep(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text=f"{self.name} slept")

    def _hold_event(self, key: str) -> asyncio.Event:
        return self._holds.setdefault(key, asyncio.Event())

    async def _hold(self, request: web.Request) -> web.Response:
        """Held until the test calls release(key): a request in progress for as long as a test needs,
        where a fixed sleep would end on its own clock, too soon on a busy machine."""
        await self._hold_event(request.match_info["key"]).wait()
        return web.Response(text=f"{self.name} held")

    async def _headers(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({
            "method": request.method,
            "path": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [[k, v] for k, v in request.headers.items()],
        })

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


class RawBackend:
    """A socket server whose every connection is handed to `handle(conn, count)` in a thread:
    for upstreams that misbehave on purpose. `count` numbers the connections from 1."""

    def __init__(self, handle: Callable[[socket.socket, int], None]):
        self.handle = handle
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                count = self.connections
            threading.Thread(target=self._run_one, args=(conn, count), daemon=True).start()

    def _run_one(self, conn: socket.socket, count: int) -> None:
        with conn, contextlib.suppress(OSError):
            self.handle(conn, count)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """An address whose connects hang: a listener that never accepts, its backlog already full, so the
    kernel drops further SYNs. Yields "127.0.0.1:port"."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            fillers.append(s)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(listener.getsockname())
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def silent_after(answers: int, heard: threading.Event) -> Callable[[socket.socket, int], None]:
    """A RawBackend handler that answers `answers` requests (keep-alive), then takes the next request,
    sets `heard` and never answers it."""

    def handle(conn: socket.socket, count: int) -> None:
        for _ in range(answers):
            read_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        read_head(conn)
        heard.set()
        with contextlib.suppress(OSError):
            conn.recv(1)  # until the proxy gives up on us

    return handle


def read_head(conn: socket.socket, timeout: float = 10.0) -> bytes:
    """Read one request head (and whatever followed it in the same reads)."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            break
        data += more
    return data


class RequestStream:
    """Reads whole requests (Content-Length bodies only) one after another off one raw connection."""

    def __init__(self, conn: socket.socket, timeout: float = 10.0):
        self.conn = conn
        self.buffer = b""
        conn.settimeout(timeout)

    def next(self) -> tuple[bytes, bytes] | None:
        """(head, body) of the next request, or None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buffer += data
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            data = self.conn.recv(65536)
            if not data:
                return None
            rest += data
        self.buffer = rest[length:]
        return head, rest[:length]


def method_of(head: bytes) -> str:
    return head.split(b" ", 1)[0].decode()
