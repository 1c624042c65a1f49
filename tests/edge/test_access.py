"""allow/deny by CIDR (edge/access.py) through a real two-worker ukproxy, IPv4 and IPv6, per listener and
route, first match wins; and the rule list itself for the addresses a loopback test cannot come from."""

from __future__ import annotations

import ipaddress
import re
import subprocess

import pytest

from tests.edge.guard_proxy import Guarded, curl
from tests.proxy.backends import Backend
from tests.waiting import wait_until
from ukproxy.edge.access import AccessList
from ukproxy.edge.guard_config import _access_list


@pytest.fixture
def backend(guard_backend: Backend) -> Backend:
    return guard_backend


def test_a_deny_list_beats_a_burst_of_requests(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    refused_before = guarded.metric("ukproxy_edge_refused_total", rule="access")
    out = subprocess.run(["ab", "-n", "2000", "-c", "20", guarded.url("denied", "/deny")], capture_output=True,
                         text=True, timeout=60).stdout
    assert "Complete requests:      2000" in out, out
    assert re.search(r"Non-2xx responses:\s+2000", out), out
    assert backend.total() == before  # not one reached the upstream
    assert curl(guarded.url("denied", "/deny"))[0] == 403
    wait_until(lambda: guarded.metric("ukproxy_edge_refused_total", rule="access") - refused_before,
               "the refusals in the metrics", accept=lambda n: n >= 2001)


def test_a_route_replaces_the_listeners_rules(guarded: Guarded) -> None:
    assert curl(guarded.url("denied", "/free/x"))[0] == 200  # access = [] there: no rule
    assert curl(guarded.url("denied", "/first"))[0] == 200  # "allow 127.0.0.1" comes before "deny 127.0.0.0/8"


def test_ipv6(guarded: Guarded) -> None:
    assert curl(guarded.url("only_me_v6"))[0] == 200
    assert curl(guarded.url("not_me_v6"))[0] == 403


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
