"""Hostile and broken requests, sent raw: each gets its precise status, never reaches the backend
as a request, and leaves the connection closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.backends import Backend
from tests.proxy.clients import RawClient
from tests.proxy.conftest import backend_behind_a_proxy

H = b"Host: t\r\n"
P = b"POST / HTTP/1.1\r\n" + H
CHUNKED = P + b"Transfer-Encoding: chunked\r\n\r\n"

CORPUS: list[tuple[str, bytes, int]] = [
    # request smuggling shapes
    ("cl-and-te", P + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", P + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("duplicate-cl-same", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    ("duplicate-cl-differing", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\nx", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\nx", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\nx", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x1\r\n\r\nx", 400),
    ("cl-space-before-colon", b"POST / HTTP/1.1\r\n" + H + b"Content-Length : 1\r\n\r\nx", 400),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nx", 400),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\nx", 400),
    ("te-xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te-twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-obs-fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk-size-not-hex", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400),
    ("chunk-size-space", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n", 400),
    ("chunk-data-too-long", CHUNKED + b"1\r\nxy\r\n0\r\n\r\n", 400),
    ("chunk-negative", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n", 400),
    # header syntax
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    ("bare-lf-lines", b"GET / HTTP/1.1\nHost: t\n\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400),
    ("bare-lf-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\nY: b\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("space-in-name", b"GET / HTTP/1.1\r\n" + H + b"X Y: a\r\n\r\n", 400),
    ("invalid-name-char", b"GET / HTTP/1.1\r\n" + H + b"X(: a\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"Xa\r\n\r\n", 400),
    ("space-before-first-header", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n", 400),
    # request line
    ("http-0.9", b"GET /\r\n\r\n", 400),
    ("http-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("lowercase-method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown-method", b"FROB / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("tab-in-target", b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ctl-in-target", b"GET /\x01 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("relative-target", b"GET x HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("star-target-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("userinfo-in-absolute-target", b"GET http://u@t/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect", b"CONNECT t:443 HTTP/1.1\r\n" + H + b"\r\n", 405),
    # Host
    ("missing-host-http11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host-with-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    # other
    ("unknown-expectation", b"GET / HTTP/1.1\r\n" + H + b"Expect: telepathy\r\n\r\n", 417),
    ("upgrade-post-with-body", b"POST / HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
]


@pytest.fixture(scope="module")
def corpus_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Backend]]:
    with backend_behind_a_proxy(tmp_path_factory.mktemp("corpus"), workers=2) as shared:
        yield shared.port, shared.backend
        assert "Traceback" not in shared.proxy.log(), shared.proxy.log()


@pytest.mark.parametrize(("name", "request_bytes", "status"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_request_gets_its_status_and_a_closed_connection(corpus_proxy, name, request_bytes, status):
    port, backend = corpus_proxy
    before = backend.total()
    with RawClient(port) as client:
        client.send(request_bytes)
        responses = client.responses(1)
        assert responses, f"{name}: no answer"
        assert responses[0].status == status
        assert responses[0].header("connection") == "close"
        assert client.closed()
    assert backend.total() == before, f"{name}: reached the backend"


def test_smuggled_request_after_a_bad_one_never_reaches_the_backend(corpus_proxy):
    port, backend = corpus_proxy
    before = backend.total()
    smuggle = (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
               b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    with RawClient(port) as client:
        client.send(smuggle)
        assert [r.status for r in client.responses(5)] == [400]
    assert backend.total() == before
    assert backend.requests[("GET", "/smuggled")] == 0


def test_a_good_request_then_a_bad_one_on_one_connection(corpus_proxy):
    port, _ = corpus_proxy
    with RawClient(port) as client:
        client.send(b"GET /fine HTTP/1.1\r\nHost: t\r\n\r\nGET /a b HTTP/1.1\r\nHost: t\r\n\r\n")
        first, second = client.responses(2)
        assert first.status == 200
        assert second.status == 400
        assert client.closed()


def test_obs_text_and_trailing_whitespace_are_accepted(corpus_proxy):
    port, backend = corpus_proxy
    with RawClient(port) as client:
        response = client.request(b"GET /ok HTTP/1.1\r\nHost: t \t\r\nX-Name: caf\xe9\r\n\r\n")
        assert response.status == 200
    # passed through as the same byte (aiohttp shows it surrogate-escaped)
    assert ("X-Name", "caf\udce9") in backend.last_headers
    assert ("Host", "t") in backend.last_headers


def test_data_after_a_closing_request_is_ignored(corpus_proxy):
    port, backend = corpus_proxy
    before = backend.requests[("GET", "/ignored")]
    with RawClient(port) as client:
        client.send(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    b"GET /ignored HTTP/1.1\r\nHost: t\r\n\r\n")
        responses = client.responses(2)
        assert [r.status for r in responses] == [200]
        assert client.closed()
    assert backend.requests[("GET", "/ignored")] == before
