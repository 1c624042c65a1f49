"""How connections spread over workers: the accept mutex, disabled counting, and the lock's holder dying."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.core.test_tcp_proxy import exchange, tcp_config
from tests.observability.helpers import scrape, status
from tests.running import RunningProxy, echo_servers, free_port
from tests.waiting import wait_until


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
    # With 32 connections a worker that accepts its 15th client (its 14 upstreams open) has fewer than 4
    # free: it skips its next turns at the mutex, and only then. 30 clients, at most 16 per worker, put at
    # least 15 on one: the workers that passed the mark are exactly those that stepped aside.
    port, metrics_port = free_port(), free_port()
    extra = 'accept_mutex = true\nworker_connections = 32\naccept_mutex_delay = "20ms"'
    metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra, upstream_extra=metrics)).start(
            [port], expect_workers=2)
        with held_connections(port, 30):
            counts = clients_per_worker(proxy, port)
            assert sum(counts.values()) == 30 and all(14 <= c <= 16 for c in counts.values()), counts
            busy = {pid for pid, c in counts.items() if c >= 15}
            slots = {w["pid"]: str(w["slot"]) for w in status(metrics_port)["workers"]}
            skipped = wait_until(  # the counters reach /metrics within a second
                lambda: {pid: scrape(metrics_port).value("ukproxy_accept_disabled_skips_total", worker=slot)
                         for pid, slot in slots.items()},
                f"skips from the workers past the mark ({counts})",
                accept=lambda skips: all(skips[pid] > 0 for pid in busy))
            assert {pid for pid, n in skipped.items() if n > 0} == busy, (counts, skipped)


def test_accepting_resumes_after_the_lock_holder_is_killed(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    extra = 'accept_mutex = true\naccept_mutex_delay = "100ms"'
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=extra)).start([port], expect_workers=2)
        pids = {w.pid for w in proxy.workers()}
        assert exchange(port, b"warm") == b"warm"
        holders = wait_until(lambda: lock_holders(pids), "a worker to hold the accept mutex", interval=0.02)
        assert len(holders) == 1, "exactly one worker holds the accept mutex"
        holder = holders.pop()
        psutil.Process(holder).kill()
        # The kernel drops the dead holder's lock; the survivor takes it and serves.
        for i in range(5):
            assert exchange(port, b"after %d" % i) == b"after %d" % i
        wait_until(lambda: lock_holders({w.pid for w in proxy.workers()}), "someone to hold the mutex again",
                   interval=0.02, context=proxy.log)
