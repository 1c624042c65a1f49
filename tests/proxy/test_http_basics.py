"""Requests through a real proxy: keep-alive and pipelining on both sides, forwarding headers, HEAD/204/304."""

from __future__ import annotations

import http.client
import json

from tests.proxy.clients import RawClient, get


def test_get_and_post_keep_alive_on_one_client_connection(shared_proxy):
    backend, port = shared_proxy.backend, shared_proxy.port
    before = backend.total()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(20):
        conn.request("GET", f"/page/{i}?q={i}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == f"backend GET /page/{i}?q={i}".encode()
        conn.request("POST", "/sha", body=b"x" * i)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read().split()[0] == str(i).encode()
    conn.close()
    assert backend.total() - before == 40


def test_upstream_connections_are_reused(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], upstream_extra="keepalive = 8")
    for i in range(30):  # a new client connection each time: reuse must come from the pool
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/{i}")
        assert conn.getresponse().read() == f"backend GET /{i}".encode()
        conn.close()
    assert backend.total() == 30
    assert backend.connections == 1


def test_no_upstream_pool_means_a_connection_per_request(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], upstream_extra="keepalive = 0")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(5):
        conn.request("GET", f"/{i}")
        assert conn.getresponse().read() == f"backend GET /{i}".encode()
    assert backend.connections == 5


def test_pipelined_requests_are_answered_in_order(shared_proxy):
    port = shared_proxy.port
    # A slow first request must not let the quick ones after it overtake it.
    burst = get("/sleep/0.3") + b"".join(get(f"/n{i}") for i in range(10)) + get("/last", extra="Connection: close\r\n")
    with RawClient(port) as client:
        client.send(burst)
        responses = client.responses(12)
        assert [r.body for r in responses] == (
            [b"backend slept"] + [f"backend GET /n{i}".encode() for i in range(10)] + [b"backend GET /last"]
        )
        assert responses[-1].header("connection") == "close"
        assert client.closed()


def test_pipelined_bodies_stay_with_their_requests(shared_proxy):
    port = shared_proxy.port
    burst = (
        b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with RawClient(port) as client:
        client.send(burst)
        first, second, third = client.responses(3)
    assert first.body.startswith(b"5 ")
    assert second.body == b"abcde"
    assert third.body == b"backend GET /after"


def test_http10_client_rules(shared_proxy):
    port = shared_proxy.port
    with RawClient(port) as client:  # 1.0 without keep-alive: one answer, then closed
        response = client.request(b"GET /a HTTP/1.0\r\n\r\n")
        assert response.body == b"backend GET /a"
        assert client.closed()
    with RawClient(port) as client:  # 1.0 asking keep-alive, known length: kept and said so
        response = client.request(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert response.header("connection").lower() == "keep-alive"
        response = client.request(b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert response.body == b"backend GET /c"
    with RawClient(port) as client:  # 1.0 and a chunked upstream answer: no chunking, close delimits
        response = client.request(b"GET /chunks/1000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert not response.chunked_on_wire
        assert len(response.body) == 1000
        assert client.closed()


def test_http11_connection_close_is_honoured(shared_proxy):
    port = shared_proxy.port
    with RawClient(port) as client:
        response = client.request(get("/x", extra="Connection: close\r\n"))
        assert response.header("connection") == "close"
        assert client.closed()


def test_keepalive_requests_limit_closes_after_the_last(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http="keepalive_requests = 3")
    with RawClient(port) as client:
        for i in range(3):
            response = client.request(get(f"/{i}"))
            assert response.status == 200
        assert response.header("connection") == "close"
        assert client.closed()


def test_forwarding_headers_and_hop_by_hop_removal(shared_proxy):
    port = shared_proxy.port
    request = get("/headers", host="shop.example", extra=(
        "X-Forwarded-For: 10.1.1.1\r\n"
        "X-Real-IP: 6.6.6.6\r\n"
        "X-Forwarded-Proto: https\r\n"
        "Via: 1.1 edge\r\n"
        "Connection: keep-alive, X-Secret\r\n"
        "X-Secret: hop\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "Proxy-Authorization: Basic abc\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "X-Kept: yes\r\n"
    ))
    with RawClient(port) as client:
        response = client.request(request)
    seen = json.loads(response.body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["version"] == "1.1"
    assert headers["host"] == "shop.example"
    assert headers["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["via"] == "1.1 edge, 1.1 ukproxy"
    assert headers["x-kept"] == "yes"
    for hop in ("x-secret", "keep-alive", "te", "proxy-authorization", "proxy-connection", "upgrade"):
        assert hop not in headers, hop


def test_header_names_are_judged_whatever_their_spelling(shared_proxy):
    """The reader classifies a header name once per spelling (http_request.special_name): on one connection,
    every spelling of a hop-by-hop header is dropped and every spelling of another one goes up as sent."""
    with RawClient(shared_proxy.port) as client:
        for te, proxy, kept in (("TE", "Proxy-Authorization", "X-Kept"), ("te", "proxy-authorization", "x-kept"),
                                ("tE", "PROXY-AUTHORIZATION", "X-KEPT"), ("TE", "Proxy-Authorization", "X-Kept")):
            response = client.request(get("/headers", extra=f"{te}: trailers\r\n{proxy}: Basic a\r\n{kept}: yes\r\n"))
            assert response.status == 200
            seen = json.loads(response.body)["headers"]
            assert [k for k, v in seen if k.lower() == "x-kept" and v == "yes"] == [kept], seen
            assert not [k for k, _ in seen if k.lower() in ("te", "proxy-authorization")], seen

def test_response_hop_by_hop_headers_do_not_reach_the_client(raw_backends, http_proxy):
    def handle(conn, _count):
        from tests.proxy.backends import read_head

        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Private\r\nX-Private: 1\r\n"
                     b"Keep-Alive: timeout=3\r\nX-Public: 2\r\n\r\nok")

    backend = raw_backends(handle)
    _, port = http_proxy([backend.address], upstream_extra="keepalive = 0")
    with RawClient(port) as client:
        response = client.request(get("/"))
    assert response.body == b"ok"
    assert response.header("x-public") == "2"
    assert response.header("x-private") is None
    assert response.header("keep-alive") is None


def test_head_204_and_304_have_no_body(shared_proxy):
    port = shared_proxy.port
    with RawClient(port, head_request=True) as client:
        response = client.request(get("/bytes/5000", method="HEAD"))
        assert response.status == 200
        assert response.header("content-length") == "5000"
    with RawClient(port) as client:
        assert client.request(get("/status/204")).status == 204
        response = client.request(get("/status/304"))
        assert response.status == 304
        assert response.body == b""
        # the connection is still in step after them
        assert client.request(get("/next")).body == b"backend GET /next"
    # HEAD then GET on one connection: the HEAD's Content-Length must not swallow the next answer
    with RawClient(port, head_request=True) as client:
        client.send(get("/bytes/10", method="HEAD"))
        assert client.responses(1)[0].status == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", "/bytes/10")
    head = conn.getresponse()
    assert head.read() == b""
    conn.request("GET", "/bytes/10")
    assert len(conn.getresponse().read()) == 10


def test_two_workers_both_answer(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], workers=2)
    for i in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/{i}")
        assert conn.getresponse().status == 200
        conn.close()
