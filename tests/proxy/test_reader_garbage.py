"""A closed client connection's request reader leaves nothing for the cyclic collector: its parser holds
its callbacks (a reference cycle), and on a busy worker those cycles made the collector run every few
hundred connections (ukproxy/proxy/http_request.py, RequestReader.close)."""

from __future__ import annotations

import gc
from collections import deque
from typing import Any

from ukproxy.config import HttpConfig
from ukproxy.proxy.http_request import END, HEAD, RequestReader


def test_a_closed_reader_is_freed_without_the_cyclic_collector():
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            events: deque[tuple[int, Any]] = deque()
            reader = RequestReader(HttpConfig(), events)
            reader.feed(b"GET /a HTTP/1.0\r\nHost: example.test\r\n\r\n")
            assert [kind for kind, _ in events] == [HEAD, END]
            reader.close()
            reader.feed(b"GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n")  # after close: ignored
            assert len(events) == 2
            del reader, events
        assert gc.collect() == 0
    finally:
        gc.enable()
