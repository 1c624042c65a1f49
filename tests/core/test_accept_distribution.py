"""How connections spread over workers: the accept mutex, disabled counting, and the lock's holder dying."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.core.test_tcp_proxy import exchange, tcp_config
from tests.running import RunningProxy, echo_servers, free_port


def clients_per_worker(proxy: RunningProxy, port: int) -> dict[int, int]:
    """Established client connections on the proxy port, by worker pid."""
    counts = {}
    for w in proxy.workers():
        conns = w.net_connections(kind="tcp")
        counts[w.pid] = sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED")
    return counts


@contextlib.contextmanager
def held_connections(port: int, n: int, pause: float = 0.01) -> Iterator[list[socket.socket]]:
    """n long-lived client connections, each proven to be proxied (one echo round trip)."""
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(b"%d" % i)
            assert s.recv(16) == b"%d" % i
            time.sleep(pause)
        yield socks
    finally:
        for s in socks:
            s.close()


def lock_holders(pids: set[int]) -> set[int]:
    """Which of `pids` hold a POSIX record lock (the accept mutex), read from /proc/locks."""
    holders = set()
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[1] == "POSIX" and fields[4].isdigit() and int(fields[4]) in pids:
                holders.add(int(fields[4]))
    return holders


@pytest.mark.parametrize("mode", ["accept_mutex = true", "accept_mutex = false\nreuseport = false"])
def test_every_worker_takes_a_share_and_none_passes_worker_connections(
    ukproxy: Callable[..., RunningProxy], mode: str
) -> None:
    # 16 connections per worker, client and upstream each counting one: at most 8 clients per worker.
    port = free_port()
    extra = f'{mode}\nworker_connections = 16\naccept_mutex_delay = "50ms"'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port], expect_workers=2)
        with held_connections(port, 14):
            counts = clients_per_worker(proxy, port)
            assert sum(counts.values()) == 14
            assert all(c >= 6 for c in counts.values()), counts  # neither worker passed 8
            assert all(c <= 8 for c in counts.values()), counts


def test_reuseport_spreads_by_the_kernels_hash(ukproxy: Callable[..., RunningProxy]) -> None:
    # One SO_REUSEPORT socket per worker; the kernel picks by a hash of the 4-tuple, so both get some
    # (all 16 on one would happen with probability 2**-15). A full worker cannot hand its queue on,
    # which is why this mode gets room to spare here.
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra="reuseport = true")).start([port], expect_workers=2)
        listeners = {w.pid for w in proxy.workers()}
        assert len(listeners) == 2
        with held_connections(port, 16):
            counts = clients_per_worker(proxy, port)
            assert sum(counts.values()) == 16
            assert all(c >= 1 for c in counts.values()), counts


def test_disabled_counting_hands_new_connections_to_the_other_worker(ukproxy: Callable[..., RunningProxy]) -> None:
    # With 64 connections a worker stops competing once fewer than 8 are free (28 clients),
    # long before it is full: the other worker gets the next ones.
    port = free_port()
    extra = 'accept_mutex = true\nworker_connections = 64\naccept_mutex_delay = "20ms"'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port], expect_workers=2)
        with held_connections(port, 40, pause=0.03):
            counts = clients_per_worker(proxy, port)
            assert sum(counts.values()) == 40
            assert max(counts.values()) <= 29, counts  # no worker went far past the 7/8 mark
            assert min(counts.values()) >= 11, counts


def test_accepting_resumes_after_the_lock_holder_is_killed(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    extra = 'accept_mutex = true\naccept_mutex_delay = "100ms"'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port], expect_workers=2)
        pids = {w.pid for w in proxy.workers()}
        assert exchange(port, b"warm") == b"warm"
        deadline = time.monotonic() + 5
        while not (holders := lock_holders(pids)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(holders) == 1, "exactly one worker holds the accept mutex"
        holder = holders.pop()
        psutil.Process(holder).kill()
        # The kernel drops the dead holder's lock; the survivor takes it and serves.
        for i in range(5):
            assert exchange(port, b"after %d" % i) == b"after %d" % i
        survivor = (pids - {holder}).pop()
        deadline = time.monotonic() + 5
        while survivor not in lock_holders({survivor} | {w.pid for w in proxy.workers()}) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock_holders({w.pid for w in proxy.workers()}), "someone holds the mutex again"
