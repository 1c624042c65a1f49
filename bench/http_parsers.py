"""Micro-benchmark: request-head parsing with httptools vs aiohttp's llhttp parser, as the proxy uses them.

Both wrap llhttp. What differs is the work around it on our request path: httptools hands raw
bytes to callbacks (we keep them as bytes and forward them); aiohttp builds a RawRequestMessage
with a CIMultiDict, a yarl URL and a StreamReader per message. Run:

    python -m bench.http_parsers [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import httptools
from aiohttp import _http_parser as aiohttp_parser

SMALL = b"GET /api/users/42?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
BROWSER = (
    b"GET /static/app/main.3f9a1c.js HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://shop.example.com/products/1234\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r\n"
    b"Connection: keep-alive\r\n"
    b"Sec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n\r\n"
)
PIPELINED_16 = SMALL * 16


class HeadCollector:
    """What ukproxy.proxy.http_request does per request, minus validation: collect the head as bytes."""

    __slots__ = ("headers", "heads", "url")

    def __init__(self) -> None:
        self.heads = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1


def httptools_run(data: bytes, rounds: int) -> int:
    collector = HeadCollector()
    parser = httptools.HttpRequestParser(collector)  # one per connection, as the proxy does
    for _ in range(rounds):
        parser.feed_data(data)
    return collector.heads


class _AiohttpProtocol:
    transport = None

    def __init__(self) -> None:
        self._reading_paused = False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


def aiohttp_run(data: bytes, rounds: int) -> int:
    loop = asyncio.new_event_loop()
    try:
        parser = aiohttp_parser.HttpRequestParser(_AiohttpProtocol(), loop, 2**16)
        heads = 0
        for _ in range(rounds):
            messages, _upgraded, _tail = parser.feed_data(data)
            heads += len(messages)
        return heads
    finally:
        loop.close()


def measure(run: Callable[[bytes, int], int], data: bytes, seconds: float) -> float:
    """Heads parsed per second, best of three runs of about `seconds` each."""
    rounds = 1000
    while True:  # calibrate
        t0 = time.perf_counter()
        run(data, rounds)
        if time.perf_counter() - t0 > seconds / 10:
            break
        rounds *= 2
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        heads = run(data, rounds * 10)
        best = max(best, heads / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    print(f"{'request':14} {'httptools':>14} {'aiohttp':>14} {'ratio':>7}")
    for name, data in (("small", SMALL), ("browser", BROWSER), ("pipelined x16", PIPELINED_16)):
        a = measure(httptools_run, data, args.seconds)
        b = measure(aiohttp_run, data, args.seconds)
        print(f"{name:14} {a:>12,.0f}/s {b:>12,.0f}/s {a / b:>6.2f}x")


if __name__ == "__main__":
    main()
