"""nginx as the native backend and as the reference proxy (stream, and http with a keep-alive upstream).

Configs are written into the run's scratch directory; nginx runs in the foreground (`daemon off`) as a
child of the bench, optionally inside a network namespace (`ip netns exec NS nginx ...`).
"""

from __future__ import annotations

from pathlib import Path

from bench.procs import Processes, Started, wait_bound
from bench.tools import STREAM_MODULE

BODY = "hello from the native backend\\n"


def _head(prefix: Path, workers: int, stream: bool) -> str:
    return f"""{f"load_module {STREAM_MODULE};" if stream else ""}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 4096; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""


def backend_conf(prefix: Path, workers: int, port: int) -> str:
    """A small fixed body from `return 200`: the fastest native server nginx can be."""
    return _head(prefix, workers, stream=False) + f"""http {{
{_http_common(prefix)}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{BODY}"; }}
    }}
}}
"""


def forward(via: str = "1.1 nginx", indent: int = 12) -> str:
    """A location's proxying to upstream "backends": keep-alive, and the forwarding headers ukproxy sends too,
    so the same request reaches the backend through either proxy."""
    lines = ("proxy_pass http://backends;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
             "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
             "proxy_set_header X-Real-IP $remote_addr;", "proxy_set_header X-Forwarded-Proto $scheme;",
             f'proxy_set_header Via "{via}";')
    return "".join(" " * indent + line + "\n" for line in lines)


def proxy_conf(prefix: Path, workers: int, servers: list[str], stream_port: int | None, http_port: int | None,
               listen_host: str = "127.0.0.1") -> str:
    """nginx stream on stream_port and http proxy (keepalive 32 upstream, the same forwarding headers as
    ukproxy's) on http_port, to the same servers."""
    lines = "\n".join(f"        server {s};" for s in servers)
    out = _head(prefix, workers, stream=stream_port is not None)
    if stream_port is not None:
        out += f"""stream {{
    upstream backends {{
{lines}
    }}
    server {{ listen {listen_host}:{stream_port} backlog=4096; proxy_pass backends; }}
}}
"""
    if http_port is not None:
        out += f"""http {{
{_http_common(prefix)}    upstream backends {{
{lines}
        keepalive 32;
    }}
    server {{
        listen {listen_host}:{http_port} backlog=4096;
        location / {{
{forward()}        }}
    }}
}}
"""
    return out


def start(procs: Processes, name: str, conf_text: str, ports: list[int], netns: str | None = None) -> Started:
    prefix = procs.raw_dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(conf_text)
    argv = ["nginx", "-p", str(prefix), "-c", str(conf)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    started = procs.start(name, argv, stop_signal=15)
    if netns is None:
        for port in ports:
            wait_bound(port, proc=started)
    return started
