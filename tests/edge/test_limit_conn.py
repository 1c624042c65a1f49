"""limit_conn through a real two-worker ukproxy: requests in progress per key across workers, refused past
the limit, and every place given back however its request ends (answered, or its client gone)."""

from __future__ import annotations

import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.edge.guard_proxy import Guarded, curl
from tests.proxy.backends import Backend
from tests.waiting import wait_until
from ukproxy.edge.guard_config import MIN_ZONE_SIZE
from ukproxy.edge.limits import ConnectionCount
from ukproxy.edge.shared_zone import WAYS, SharedZone


@pytest.fixture
def backend(guard_backend: Backend) -> Backend:
    return guard_backend


@pytest.fixture
def hold(backend: Backend) -> Iterator[str]:
    """A backend path whose requests stay in progress until the test calls backend.release on it (or it
    ends): places held for as long as the test needs them, not for a sleep a busy machine outlasts."""
    key = uuid.uuid4().hex
    yield f"/hold/{key}"
    backend.release(key)


def _slow_clients(guarded: Guarded, n: int, path: str, *curl_args: str) -> list[subprocess.Popen[str]]:
    """n curls, each on its own connection (so the kernel spreads them over both workers)."""
    return [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *curl_args,
                              guarded.url("conn", path)], stdout=subprocess.PIPE, text=True)
            for _ in range(n)]


def test_past_the_limit_refused_across_workers_and_places_given_back(guarded: Guarded, backend: Backend,
                                                                      hold: str) -> None:
    refused_before = guarded.metric("ukproxy_edge_refused_total", rule="limit_conn", zone="addr")
    holders = _slow_clients(guarded, 2, hold)
    wait_until(lambda: backend.requests[("GET", hold)], "both places taken", accept=lambda n: n == 2)
    # Four more, each on a connection of its own (the kernel spreads them over both workers): all refused.
    assert [curl(guarded.url("conn", "/x"))[0] for _ in range(4)] == [429] * 4
    backend.release(hold.rpartition("/")[2])
    assert [c.communicate(timeout=30)[0] for c in holders] == ["200", "200"]
    # Both requests ended: their places are free again, for as many requests as the limit allows at once.
    again = _slow_clients(guarded, 2, "/sleep/0.2")
    assert sorted(c.communicate(timeout=30)[0] for c in again) == ["200", "200"]
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="limit_conn", zone="addr") - refused_before,
               "four refusals in the metrics", accept=lambda n: n == 4)


def test_a_client_that_resets_gives_its_place_back(guarded: Guarded, backend: Backend, hold: str) -> None:
    # Two clients hold both places, and reset their connections while the backend still holds them.
    holders = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", guarded.ports["conn"]), timeout=10)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % hold.encode())
        holders.append(s)
    wait_until(lambda: backend.requests[("GET", hold)], "both requests at the backend", accept=lambda n: n == 2)
    assert curl(guarded.url("conn", "/x"))[0] == 429
    for s in holders:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a RST
        s.close()
    # Their requests ended with their connections: the places are free while the backend has not answered.
    wait_until(lambda: curl(guarded.url("conn", "/x"))[0], "a request admitted after the clients left",
               accept=lambda status: status == 200)


def test_places_held_by_a_killed_worker_are_given_back(guarded: Guarded, backend: Backend, hold: str) -> None:
    holders = _slow_clients(guarded, 2, hold)
    wait_until(lambda: backend.requests[("GET", hold)], "both places taken", accept=lambda n: n == 2)
    assert curl(guarded.url("conn", "/x"))[0] == 429
    old = {w.pid for w in guarded.proxy.workers()}
    for worker in guarded.proxy.workers():
        worker.kill()  # SIGKILL: no request of theirs ends, nothing is given back by them
    # Each new worker zeroes the cells no live worker owns as it starts: the dead ones' places are free
    # once both are ready (a start takes seconds on a busy machine), and the backend still holds.
    assert {w.pid for w in guarded.proxy.wait_ready(2)}.isdisjoint(old)
    assert curl(guarded.url("conn", "/x"))[0] == 200
    for c in holders:
        c.communicate(timeout=30)


def test_a_bucket_whose_every_entry_is_in_use_refuses_a_new_key() -> None:
    zone = SharedZone(None, MIN_ZONE_SIZE, 8)
    count = ConnectionCount(zone, "tiny", 1, 429)
    keys = [k for k in (b"10.0.%d.%d" % (i // 256, i % 256) for i in range(5000))
            if zone.bucket(zone.entry_key(k)) == 0]
    held = [count.acquire(k) for k in keys[:WAYS]]
    assert min(held) >= 0  # the bucket's eight entries, one key each
    assert count.acquire(keys[WAYS]) == -1  # a ninth key finds no entry free: refused, as nginx's full zone
    assert count.acquire(keys[0]) == -1  # and a key at its limit (1) is refused
    count.release(held[3])
    assert count.acquire(keys[WAYS]) >= 0  # an idle entry is given to the new key
