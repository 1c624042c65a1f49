"""proxy_next_upstream: what is retried, what never is, and the 502/503/504 shapes."""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter

from tests.proxy.backends import RequestStream, method_of
from tests.proxy.clients import RawClient, get, status_of
from tests.running import free_port


def no_passive_health(address: str) -> str:
    """A server entry that failures do not take out, so each request meets every server."""
    return f'{{ address = "{address}", max_fails = 0 }}'


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused


class Recorder:
    """Counts the requests raw backends received, by method, across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.methods: Counter[str] = Counter()

    def saw(self, head: bytes) -> None:
        with self.lock:
            self.methods[method_of(head)] += 1


def swallowing_backend(recorder: Recorder):
    """Reads each request whole, then closes without answering."""

    def handle(conn, _count):
        request = RequestStream(conn).next()
        if request is not None:
            recorder.saw(request[0])

    return handle


def answering_backend(recorder: Recorder, status: int):
    def handle(conn, _count):
        stream = RequestStream(conn)
        while (request := stream.next()) is not None:
            recorder.saw(request[0])
            body = b"status %d" % status
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))

    return handle


def test_connect_errors_are_retried_on_the_next_server(backends, http_proxy):
    live = backends("live")
    proxy, port = http_proxy([dead_address(), live.address, dead_address()])
    for i in range(12):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", f"/{i}", body=b"payload")  # even a POST: nothing went out before the connect failed
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, f"live POST /{i}".encode())
        conn.close()
    assert live.total("POST") == 12
    assert "connect_error" in proxy.log()


def test_non_idempotent_requests_are_never_replayed(raw_backends, http_proxy):
    recorder = Recorder()
    one, two = raw_backends(swallowing_backend(recorder)), raw_backends(swallowing_backend(recorder))
    _, port = http_proxy([no_passive_health(one.address), no_passive_health(two.address)],
                         upstream_extra="keepalive = 0")
    for method in ("POST", "PATCH", "LOCK"):
        request = f"{method} /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody".encode()
        assert status_of(port, request) == 502
    assert recorder.methods == {"POST": 1, "PATCH": 1, "LOCK": 1}
    # an idempotent request is tried on both servers
    assert status_of(port, get("/", extra="Content-Length: 0\r\n")) == 502
    assert status_of(port, b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody") == 502
    assert recorder.methods["GET"] == 2
    assert recorder.methods["PUT"] == 2


def test_tries_bounds_the_servers_tried(raw_backends, http_proxy):
    recorder = Recorder()
    servers = [raw_backends(swallowing_backend(recorder)) for _ in range(4)]
    _, port = http_proxy([no_passive_health(s.address) for s in servers], upstream_extra="tries = 2\nkeepalive = 0")
    assert status_of(port, get("/")) == 502
    assert recorder.methods["GET"] == 2


def test_configured_statuses_are_retried_for_idempotent_requests_only(raw_backends, backends, http_proxy):
    recorder = Recorder()
    unavailable = raw_backends(answering_backend(recorder, 503))
    good = backends("good")
    _, port = http_proxy([no_passive_health(unavailable.address), good.address],
                         upstream_extra="next_upstream_statuses = [503]\nbalance = \"round_robin\"")
    for i in range(6):
        assert status_of(port, get(f"/{i}")) == 200
    assert recorder.methods["GET"] >= 1  # round robin sent some to the 503 server, and they were retried
    answers = Counter(status_of(port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
                      for _ in range(6))
    assert answers[503] >= 1  # a POST is never replayed: the 503 reaches the client
    assert answers[503] == recorder.methods["POST"]


def test_statuses_not_configured_pass_through(raw_backends, http_proxy):
    recorder = Recorder()
    unavailable = raw_backends(answering_backend(recorder, 503))
    _, port = http_proxy([unavailable.address])
    with RawClient(port) as client:
        response = client.request(get("/"))
        assert (response.status, response.body) == (503, b"status 503")


def test_no_available_server_is_503(backends, http_proxy):
    backend = backends()
    _, port = http_proxy([f'{{ address = "{backend.address}", down = true }}'])
    with RawClient(port) as client:
        response = client.request(get("/"))
        assert response.status == 503
        assert response.body.startswith(b"503")
        assert client.request(get("/")).status == 503  # and the connection is still usable
    assert backend.total() == 0


def test_upstream_that_breaks_the_protocol_is_502(raw_backends, http_proxy):
    answers = {  # by the request's path: one proxy and one backend for every way of breaking it
        b"/garbage": b"HELLO THERE\r\n\r\n",
        b"/truncated-head": b"HTTP/1.1 200 OK\r\nContent-Le",
        b"/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    }

    asked = []

    def breaks_it(conn, _count):
        request = RequestStream(conn).next()
        if request is not None:
            asked.append(request[0].split(b" ")[1])
            conn.sendall(answers.get(asked[-1], b""))

    backend = raw_backends(breaks_it)
    _, port = http_proxy([backend.address], upstream_extra="tries = 1")
    for path in answers:
        assert status_of(port, get(path.decode())) == 502, path
    assert asked == list(answers)  # each 502 was the answer to its own request


def test_upstream_dying_mid_body_truncates_and_closes_the_client(raw_backends, http_proxy):
    def dies(conn, _count):
        RequestStream(conn).next()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
        conn.shutdown(socket.SHUT_RDWR)

    backend = raw_backends(dies)
    _, port = http_proxy([backend.address])
    with RawClient(port) as client:
        client.send(get("/"))
        assert client.responses(1) == []  # never a complete response
        assert client.eof


def test_stale_keepalive_connection_is_retried_for_idempotent_requests(raw_backends, http_proxy):
    recorder = Recorder()

    def one_answer_per_connection(conn, _count):
        """Answers one request as keep-alive, then takes the next and closes: the server's idle close
        racing with our reuse, made certain."""
        stream = RequestStream(conn)
        request = stream.next()
        if request is None:
            return
        recorder.saw(request[0])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        request = stream.next()
        if request is not None:
            recorder.saw(request[0])

    backend = raw_backends(one_answer_per_connection)
    _, port = http_proxy([backend.address], upstream_extra="tries = 1")
    assert status_of(port, get("/first")) == 200
    assert status_of(port, get("/second")) == 200  # the reused connection died: a fresh one answered
    assert backend.connections == 2
    assert recorder.methods["GET"] == 3
    # the same race for a POST (on the connection /second left in the pool) is not retried
    post = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
    assert status_of(port, post) == 502
    assert recorder.methods["POST"] == 1
    assert backend.connections == 2
    assert status_of(port, post) == 200  # on a fresh connection
