"""Per-server series of static servers stay in /metrics (only gone VMs' series are left out)."""

from __future__ import annotations

from collections.abc import Callable

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
