"""http uses the upstream's configured balancing method per request, with the configured key."""

from __future__ import annotations

import http.client
from collections import defaultdict


def _who(port: int, path: str, headers: dict[str, str] | None = None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    body = conn.getresponse().read().decode()
    conn.close()
    return body.split()[0]


def test_hash_by_uri_sends_one_uri_to_one_backend(backends, http_proxy):
    servers = [backends(f"b{i}") for i in range(3)]
    _, port = http_proxy([s.address for s in servers], upstream_extra='balance = "hash"\nhash_key = "uri"')
    seen: dict[str, set[str]] = defaultdict(set)
    for _ in range(3):
        for i in range(20):
            seen[f"/item/{i}?r=0"].add(_who(port, f"/item/{i}?r=0"))
    assert all(len(names) == 1 for names in seen.values()), seen
    assert len(set().union(*seen.values())) > 1  # and the keys spread over more than one backend


def test_hash_by_header(backends, http_proxy):
    servers = [backends(f"b{i}") for i in range(3)]
    _, port = http_proxy([s.address for s in servers], upstream_extra='balance = "hash"\nhash_key = "header:X-User"')
    for user in ("ann", "bob", "cyd", "dan"):
        assert len({_who(port, f"/{i}", {"X-User": user}) for i in range(6)}) == 1


def test_round_robin_spreads_requests_of_one_connection(backends, http_proxy):
    servers = [backends(f"b{i}") for i in range(3)]
    _, port = http_proxy([s.address for s in servers])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    names = []
    for i in range(9):
        conn.request("GET", f"/{i}")
        names.append(conn.getresponse().read().decode().split()[0])
    assert sorted(names) == sorted(["b0", "b1", "b2"] * 3)  # per request, not per client connection


def test_least_conn_avoids_the_busy_server(backends, http_proxy):
    import threading

    from tests.waiting import wait_until

    servers = [backends(f"b{i}") for i in range(2)]
    _, port = http_proxy([s.address for s in servers], upstream_extra='balance = "least_conn"')
    slow = threading.Thread(target=_who, args=(port, "/sleep/2"))
    slow.start()
    try:
        wait_until(lambda: sum(s.total() for s in servers), "the slow request in flight at one backend",
                   interval=0.01)
        busy = next(s.name for s in servers if s.total())
        assert {_who(port, f"/{i}") for i in range(4)} == {n for n in ("b0", "b1") if n != busy}
    finally:
        slow.join()
