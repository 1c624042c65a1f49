"""Membership under leases: records come and go with the nodes, one per node id. Each node is a master in
a network namespace of its own (tests/cluster/conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.cluster.conftest import TTL, records, start_nodes
from tests.running import REPO
from tests.waiting import wait_until


def test_nodes_register_and_a_killed_node_vanishes_after_its_lease(etcd, nodes):
    a, b, c = start_nodes(*(nodes(n, "web") for n in ("a", "b", "c")))
    found = wait_until(lambda: records(etcd), "three records", accept=lambda r: set(r) == {"a", "b", "c"},
                       timeout=30, context=a.log)
    assert found["a"]["value"]["state"] == "ready"
    assert found["a"]["value"]["peer"] == f"{a.address}:{a.port}"
    assert found["a"]["value"]["capacity"] == {"web": {"ready": 1, "free": 0, "queue": 0}}
    assert all(r["lease"] for r in found.values()), "every record lives under a lease"
    assert a.cluster()["etcd"] == "connected"

    shown = subprocess.run([sys.executable, "-m", "ukproxy", "cluster", "status", "-c", str(a.config_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "3 node(s)" in shown.stdout
    for node in (a, b, c):
        assert f"{node.address}:{node.port}" in shown.stdout

    b.sigkill()
    # Not at once (the lease outlives the node by up to its TTL), but surely within a few TTLs.
    wait_until(lambda: records(etcd), "b's record to vanish with its lease", accept=lambda r: set(r) == {"a", "c"},
               timeout=TTL * 4 + 10)
    assert a.get()[0] == 200 and c.get()[0] == 200


def test_a_graceful_stop_leaves_at_once_with_state_draining_meanwhile(etcd, nodes):
    a = nodes("a", "web").start_node()
    wait_until(lambda: records(etcd), "a's record", accept=lambda r: "a" in r, timeout=30, context=a.log)
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0
    # The record went with the revoked lease, not after the TTL: gone by the time the master exited.
    assert "a" not in records(etcd)


def test_paused_past_its_ttl_a_node_registers_again_with_one_record(etcd, nodes):
    a = nodes("a", "web").start_node()
    first = wait_until(lambda: records(etcd), "a's record", accept=lambda r: "a" in r, timeout=30, context=a.log)
    instance = first["a"]["value"]["instance"]
    a.signal(signal.SIGSTOP)
    wait_until(lambda: records(etcd), "a's record to expire while it is stopped", accept=lambda r: "a" not in r,
               timeout=TTL * 4 + 10)
    a.signal(signal.SIGCONT)
    again = wait_until(lambda: records(etcd), "a to register again", accept=lambda r: "a" in r, timeout=30,
                       context=a.log)
    assert list(again) == ["a"]
    assert again["a"]["value"]["instance"] == instance  # the same process, under a new lease
    assert again["a"]["lease"] != first["a"]["lease"]
    assert wait_until(a.cluster, "two registrations", accept=lambda s: s["registrations"] == 2)["etcd"] == "connected"


def test_a_second_node_with_the_same_id_is_refused(etcd, nodes):
    a = nodes("a", "web").start_node()
    held = wait_until(lambda: records(etcd), "a's record", accept=lambda r: "a" in r, timeout=30, context=a.log)
    twin = nodes("a", "web", name="a-twin").start_node()
    refused = wait_until(twin.cluster, "the twin to be refused", accept=lambda s: s["etcd"] == "refused",
                         timeout=30, context=twin.log)
    assert "node id 'a' is held by another node" in refused["etcd_error"]
    assert held["a"]["value"]["instance"] in refused["etcd_error"]
    assert records(etcd)["a"]["value"]["instance"] == held["a"]["value"]["instance"]
    assert twin.get()[0] == 200, "a refused node still serves its own config"
    assert a.cluster()["etcd"] == "connected"
