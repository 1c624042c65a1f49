"""Per-server series of static servers stay in /metrics (only gone VMs' series are left out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.core.test_tcp_proxy import tcp_config
from tests.observability.helpers import scrape
from tests.running import RunningProxy, echo_servers, exchange, free_port
from tests.waiting import wait_until


def test_static_servers_keep_their_series(ukproxy: Callable[..., RunningProxy]) -> None:
    port, metrics_port = free_port(), free_port()
    with echo_servers(2) as (a, b):
        extra = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        proxy = ukproxy(tcp_config(port, [a.port, b.port], workers=1, extra=extra)).start([port], expect_workers=1)
        for i in range(4):
            assert exchange(port, b"hello %d" % i) == b"hello %d" % i
        sent = wait_until(lambda: scrape(metrics_port).by_label("ukproxy_upstream_server_requests_total", "server"),
                          "both servers' request counts", accept=lambda seen: sum(seen.values()) == 4,
                          context=proxy.log)
        assert set(sent) == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}


def test_a_dead_workers_counts_of_gone_servers_are_not_archived(tmp_path: Path) -> None:
    """When a worker is reaped its counters move into the archive file, except a gone VM's: the archive
    must not keep every VM id that ever was."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from ukproxy.metrics.multiproc import ARCHIVE, archive_dead

    def key(server: str) -> str:
        name = "ukproxy_upstream_server_requests"
        return mmap_key(name, name + "_total", ["upstream", "server"], ["web", server], "Requests.")

    dead = MmapedDict(str(tmp_path / "counter_4242.db"))
    dead.write_value(key("web-1"), 5.0, 0.0)  # a VM still in the fleet
    dead.write_value(key("web-2"), 7.0, 0.0)  # one that has gone
    dead.close()
    archive_dead(4242, str(tmp_path), lambda upstream, server: server == "web-1")
    assert not (tmp_path / "counter_4242.db").exists()
    kept = {k: v for k, v, _, _ in MmapedDict.read_all_values_from_file(str(tmp_path / f"counter_{ARCHIVE}.db"))}
    assert kept == {key("web-1"): 5.0}
