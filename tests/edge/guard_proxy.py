"""One real two-worker ukproxy for the limit, access and auth tests (edge/guard.py), and ways to read it.

SITE is its config: a listener per case, named (`{port:NAME}` gets a free port), the tests' backend as the
upstream (`{backend}`), the htpasswd file (`{htpasswd}`). tests/edge/conftest.py starts it once for the
package (a master's start costs seconds on a busy machine); each case's zones are its own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from pathlib import Path

from tests.running import RunningProxy, free_port
from tests.waiting import wait_until


class Guarded:
    def __init__(self, proxy: RunningProxy, ports: dict[str, int], metrics_port: int):
        self.proxy = proxy
        self.ports = ports
        self.metrics_port = metrics_port

    def url(self, listener: str, path: str = "/x") -> str:
        host = "[::1]" if listener.endswith("_v6") else "127.0.0.1"
        return f"http://{host}:{self.ports[listener]}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a family's samples whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self) -> None:
        self.proxy.stop()


def start_guarded(tmp: Path, config: str, **values: str) -> Guarded:
    names = list(dict.fromkeys(re.findall(r"\{port:(\w+)\}", config)))
    ports = {name: free_port() for name in names}
    metrics_port = free_port()
    text = config  # not str.format: TOML inline tables have braces too
    for key, value in values.items():
        text = text.replace(f"{{{key}}}", value)
    for name, port in ports.items():
        text = text.replace(f"{{port:{name}}}", str(port))
    text = f'workers = 2\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' + text
    v6 = [port for name, port in ports.items() if name.endswith("_v6")]
    proxy = RunningProxy(tmp, text, name="guarded")
    try:
        proxy.start(wait_ports=[p for p in ports.values() if p not in v6], expect_workers=2)
        for port in v6:
            wait_until(lambda port=port: _listens_v6(port), f"ukproxy to listen on [::1]:{port}", context=proxy.log)
        guarded = Guarded(proxy, ports, metrics_port)
        # The master listens before its workers accept: wait until both have started their accept cycles
        # (their metrics appear then), or a test's first second of traffic would wait in the backlog.
        wait_until(lambda: _workers_in(guarded), "both workers to accept", accept=lambda n: n == 2,
                   context=proxy.log)
    except BaseException:
        proxy.stop()  # a start that failed leaves nothing running
        raise
    return guarded


def _workers_in(guarded: Guarded) -> int:
    try:
        text = guarded.metrics()
    except OSError:
        return 0
    return len(set(re.findall(r'ukproxy_worker_accepted_connections\{.*?worker="(\d+)"', text)))


def _listens_v6(port: int) -> bool:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.connect(("::1", port))  # connected and closed without a byte: no request reaches a backend
        except OSError:
            return False
        return True


def htpasswd(path: Path, flag: str, user: str, password: str) -> None:
    """A line written by the real htpasswd (apache2-utils): -B bcrypt, -m apr1."""
    create = ["-c"] if not path.exists() else []
    subprocess.run(["htpasswd", *create, "-b", flag, str(path), user, password], check=True, capture_output=True)


def curl(url: str, *args: str) -> tuple[int, str]:
    """(status, headers and body) from a real curl."""
    out = subprocess.run(["curl", "-s", "-i", "--max-time", "20", *args, url], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.match(r"HTTP/1\.1 (\d+)", out)
    return (int(m.group(1)) if m else 0), out


RATE = 100  # r/s of the rate test's zone

SITE = f"""
[[limit_req_zone]]  # test_limit_req
name = "site"
key = "site"
rate = "{RATE}r/s"
size = "64k"

[[limit_req_zone]]
name = "bykey"
key = "header:X-Api-Key"
rate = "1r/m"

[[limit_req_zone]]
name = "smooth"
key = "remote_addr"
rate = "4r/s"

[[limit_req_zone]]
name = "realip"
key = "remote_addr"
rate = "1r/m"

[real_ip]  # the tests' clients are 127.0.0.1: an X-Forwarded-For from them names the client
trusted_proxies = ["127.0.0.1/32"]

[[limit_conn_zone]]  # test_limit_conn
name = "addr"
key = "remote_addr"
size = "64k"

[[listen]]  # one rate for everything, refused past its burst at once
address = "127.0.0.1:{{port:rate}}"
protocol = "http"
upstream = "app"
limit_req = {{zone = "site", burst = {RATE}, nodelay = true}}

[[listen]]  # per X-Api-Key, a burst of 2, answered 503
address = "127.0.0.1:{{port:bykey}}"
protocol = "http"
upstream = "app"
limit_req = [{{zone = "bykey", burst = 2, nodelay = true, status = 503}}]

[[listen]]  # a burst of 5 smoothed to the rate; routes /free (not limited) and /deny, /open, /first, /staff
address = "127.0.0.1:{{port:smooth}}"
protocol = "http"
limit_req = {{zone = "smooth", burst = 5}}

[[listen]]  # keyed on the address [real_ip] takes from X-Forwarded-For
address = "127.0.0.1:{{port:forwarded}}"
protocol = "http"
upstream = "app"
limit_req = {{zone = "realip", nodelay = true}}
access = ["deny 192.0.2.66", "allow all"]

[[listen]]
address = "127.0.0.1:{{port:conn}}"
protocol = "http"
upstream = "app"
limit_conn = [{{zone = "addr", conn = 2}}]

[[listen]]  # test_access: this client denied, except on routes that say otherwise
address = "127.0.0.1:{{port:denied}}"
protocol = "http"
access = ["allow 10.0.0.0/8", "deny 127.0.0.0/8", "allow all"]

[[listen]]
address = "[::1]:{{port:only_me_v6}}"
protocol = "http"
upstream = "app"
access = ["allow ::1/128", "deny all"]

[[listen]]
address = "[::1]:{{port:not_me_v6}}"
protocol = "http"
upstream = "app"
access = ["deny ::1", "allow 127.0.0.1"]

[[listen]]  # test_auth_basic
address = "127.0.0.1:{{port:staff}}"
protocol = "http"
auth_basic = "Staff only"
auth_basic_user_file = "{{htpasswd}}"

[[listen]]  # test_guard_headers: an HTTP/2 stream's refusal
address = "127.0.0.1:{{port:denied_h2}}"
protocol = "http"
http2 = true
access = ["deny 127.0.0.0/8", "allow all"]

[[route]]
prefix = "/"
upstream = "app"

[[route]]  # test_guard_headers: add_header ... always, and without always
prefix = "/ruled-always"
strip_prefix = true
upstream = "app"
response_headers = {{add = {{X-Edge = "always", X-For = "$remote_addr"}}, always = true}}

[[route]]
prefix = "/ruled"
strip_prefix = true
upstream = "app"
response_headers = {{add = {{X-Edge = "success only"}}, remove = ["Server"]}}

[[route]]
prefix = "/free"
upstream = "app"
limit_req = []
access = []
auth_basic = "off"

[[route]]
prefix = "/first"
upstream = "app"
limit_req = []
access = ["allow 127.0.0.1", "deny 127.0.0.0/8"]

[[upstream]]
name = "app"
servers = ["{{backend}}"]
"""
