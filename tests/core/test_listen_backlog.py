"""The configured listen backlog is the one the kernel uses, in every accept mode, once workers serve.

`ss -ltn` shows a listening socket's backlog as its Send-Q. uvloop's server calls listen() again on
the socket it is given, so the worker must pass the configured backlog, not its own default.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.core.test_accept_distribution import held_connections
from tests.core.test_tcp_proxy import tcp_config
from tests.running import RunningProxy, echo_servers, free_port

BACKLOG = 77


def listen_backlogs(port: int) -> list[int]:
    """The Send-Q (the backlog) of every socket listening on 127.0.0.1:port."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return sorted(int(line.split()[2]) for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("mode, extra, sockets", [
    ("reuseport", "", 2),
    ("shared socket", "reuseport = false", 1),
    ("accept mutex", "accept_mutex = true", 1),
])
def test_configured_backlog_is_used(ukproxy: Callable[..., RunningProxy], mode: str, extra: str, sockets: int) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        config = tcp_config(port, [b.port], extra=extra).replace(
            f'address = "127.0.0.1:{port}"', f'address = "127.0.0.1:{port}"\nbacklog = {BACKLOG}')
        proxy = ukproxy(config).start([port])
        proxy.wait_workers(2)
        # Served connections on every socket: each worker's server exists, and has listened again.
        with held_connections(port, 24, pause=0):
            assert listen_backlogs(port) == [BACKLOG] * sockets, mode
