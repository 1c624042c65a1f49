"""The keep-alive fast path (a pooled upstream connection, no Task per request) and its lazy timers:
the same answers, limits and timeouts as the coroutine path, request after request on one connection."""

from __future__ import annotations

from tests.proxy.clients import RawClient, get, status_of


def test_read_timeout_fires_on_a_reused_connection(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], upstream_extra="read_timeout = 0.5\ntries = 1")
    with RawClient(port) as client:
        for i in range(3):  # the upstream connection is parked and taken again each time
            assert client.request(get(f"/warm{i}")).status == 200
        assert client.request(get("/sleep/5")).status == 504  # the timer armed for an earlier request still bounds it
    assert status_of(port, get("/fine")) == 200
    assert backend.connections >= 1


def test_pipelined_gets_take_a_pooled_connection_in_turn(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], upstream_extra="keepalive = 1")
    burst = b"".join(get(f"/p{i}") for i in range(20))
    with RawClient(port) as client:
        client.send(burst)
        responses = client.responses(20)
        assert [r.body for r in responses] == [f"backend GET /p{i}".encode() for i in range(20)]
        # and the connection goes on serving, one request at a time
        for i in range(5):
            assert client.request(get(f"/s{i}")).body == f"backend GET /s{i}".encode()
    assert backend.total() == 25


def test_header_timeout_after_keepalive_requests(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http="client_header_timeout = 0.5\nkeepalive_timeout = 60")
    with RawClient(port) as client:
        for i in range(3):
            assert client.request(get(f"/{i}")).status == 200
        client.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        responses = client.responses(1)
        assert responses and responses[0].status == 408
        assert client.closed()
    assert backend.total() == 3


def test_keepalive_timeout_after_several_requests(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([backend.address], http="keepalive_timeout = 0.5\nclient_header_timeout = 60")
    with RawClient(port) as client:
        for i in range(5):
            assert client.request(get(f"/{i}")).status == 200
        assert client.closed()
        assert client.responses(1) == []  # closed quietly, no 408
    assert backend.total() == 5
