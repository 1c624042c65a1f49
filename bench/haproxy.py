"""HAProxy as a further reference (tcp and http mode), used only when `haproxy` is installed."""

from __future__ import annotations

from bench.procs import Processes, Started, wait_bound


def conf(workers: int, servers: list[str], tcp_port: int, http_port: int) -> str:
    lines = "\n".join(f"    server s{i} {s}" for i, s in enumerate(servers))
    return f"""global
    nbthread {workers}
    maxconn 8192
defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend ft_tcp
    mode tcp
    bind 127.0.0.1:{tcp_port}
    default_backend bk_tcp
backend bk_tcp
    mode tcp
{lines}
frontend ft_http
    mode http
    option http-keep-alive
    bind 127.0.0.1:{http_port}
    default_backend bk_http
backend bk_http
    mode http
    http-reuse always
{lines}
"""


def start(procs: Processes, workers: int, servers: list[str], tcp_port: int, http_port: int) -> Started:
    path = procs.raw_dir / "haproxy.cfg"
    path.write_text(conf(workers, servers, tcp_port, http_port))
    started = procs.start("haproxy", ["haproxy", "-db", "-f", str(path)])
    for port in (tcp_port, http_port):
        wait_bound(port, proc=started)
    return started
