"""allow/deny by CIDR (edge/access.py) through a real two-worker ukproxy, IPv4 and IPv6, per listener and
route, first match wins; and the rule list itself for the addresses a loopback test cannot come from."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.edge.guard_proxy import Guarded, curl, start_guarded
from tests.proxy.backends import Backend
from tests.waiting import wait_until
from ukproxy.edge.access import AccessList
from ukproxy.edge.guard_config import _access_list

CONFIG = """
[[listen]]  # 0: this client denied, except on /open
address = "127.0.0.1:{port0}"
protocol = "http"
access = ["allow 10.0.0.0/8", "deny 127.0.0.0/8", "allow all"]

[[route]]
prefix = "/"
upstream = "app"

[[route]]
prefix = "/open"
upstream = "app"
access = []

[[route]]
prefix = "/first"
upstream = "app"
access = ["allow 127.0.0.1", "deny 127.0.0.0/8"]

[[listen]]  # 1: IPv6, only ::1
address = "[::1]:{port1}"
protocol = "http"
upstream = "app"
access = ["allow ::1/128", "deny all"]

[[listen]]  # 2: IPv6, ::1 denied
address = "[::1]:{port2}"
protocol = "http"
upstream = "app"
access = ["deny ::1", "allow 127.0.0.1"]

[[upstream]]
name = "app"
servers = ["{backend}"]
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Guarded]:
    g = start_guarded(tmp_path_factory.mktemp("access"), CONFIG, backend.address, 3)
    yield g
    g.stop()


def test_a_deny_list_beats_a_burst_of_requests(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    refused_before = guarded.metric("ukproxy_edge_refused_total", rule="access")
    out = subprocess.run(["ab", "-n", "2000", "-c", "20", guarded.url(0, "/deny")], capture_output=True,
                         text=True, timeout=60).stdout
    assert "Complete requests:      2000" in out, out
    assert re.search(r"Non-2xx responses:\s+2000", out), out
    assert backend.total() == before  # not one reached the upstream
    assert curl(guarded.url(0, "/deny"))[0] == 403
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="access") - refused_before,
               "the refusals in the metrics", accept=lambda n: n >= 2001)


def test_a_route_replaces_the_listeners_rules(guarded: Guarded) -> None:
    assert curl(guarded.url(0, "/open/x"))[0] == 200  # access = [] there: no rule
    assert curl(guarded.url(0, "/first"))[0] == 200  # "allow 127.0.0.1" comes before "deny 127.0.0.0/8"


def test_ipv6(guarded: Guarded) -> None:
    assert curl(f"http://[::1]:{guarded.ports[1]}/x")[0] == 200
    assert curl(f"http://[::1]:{guarded.ports[2]}/x")[0] == 403


def test_first_match_wins_and_mapped_addresses_are_ipv4() -> None:
    rules = AccessList(_access_list(["deny 192.0.2.7", "allow 192.0.2.0/24", "allow 2001:db8::/32",
                                     "deny all"]))
    assert not rules.allows(b"192.0.2.7")
    assert rules.allows(b"192.0.2.8")
    assert rules.allows(b"::ffff:192.0.2.8")  # a dual-stack listener's IPv4 client
    assert not rules.allows(b"::ffff:192.0.2.7")
    assert rules.allows(b"2001:db8::1")
    assert not rules.allows(b"2001:db9::1")
    assert not rules.allows(b"-")  # not an address: only "all" matches it
    assert AccessList(_access_list(["deny 10.0.0.0/8"])).allows(b"192.0.2.1")  # no match: allowed
    assert ipaddress.ip_address("192.0.2.8") in ipaddress.ip_network("192.0.2.0/24")
