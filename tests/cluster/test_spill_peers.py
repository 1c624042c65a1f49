"""Which peers a node may spill to, from the records in etcd; and how a worker's PeerSet picks among them."""

from __future__ import annotations

import pytest

from ukproxy.cluster.spill import peer_lists
from ukproxy.config import ConfigError, loads
from ukproxy.protocol import PeerInfo, Peers, from_wire
from ukproxy.upstream.peers import PeerSet

CONFIG = """workers = 1
[[listen]]
address = "127.0.0.1:8080"
upstream = "web"
[[upstream]]
name = "web"
[upstream.vm]
image = "/nonexistent.elf"
[[upstream]]
name = "static"
servers = ["127.0.0.1:9000"]
[cluster]
endpoints = ["http://127.0.0.1:2379"]
node_id = "a"
"""


def record(peer: str, ready: int, free: int, queue: int, state: str = "ready") -> dict:
    return {"state": state, "peer": peer, "capacity": {"web": {"ready": ready, "free": free, "queue": queue},
                                                       "static": {"ready": 1, "free": 0, "queue": 0}}}


def test_peers_are_the_ready_nodes_with_room_weighted_by_it():
    config = loads(CONFIG, "node.toml")
    records = {
        "a": record("127.0.0.1:1001", 1, 3, 0),  # this node itself
        "b": record("127.0.0.1:1002", 2, 1, 0),
        "c": record("127.0.0.1:1003", 1, 3, 2),  # queueing: full
        "d": record("127.0.0.1:1004", 1, 1, 0, state="draining"),
        "e": record("", 1, 1, 0),  # no peer address
        "f": record("127.0.0.1:1006", 0, 5, 0),
        "g": {"state": "ready", "peer": "127.0.0.1:1007", "capacity": {"other": {"free": 9}}},
    }
    lists = peer_lists(records, "a", config)
    assert lists == {"web": [PeerInfo("b", "127.0.0.1", 1002, 3), PeerInfo("f", "127.0.0.1", 1006, 5)]}
    assert from_wire(Peers(lists).to_wire()) == Peers(lists)  # as the control channel carries it


def test_a_peer_set_keeps_a_staying_peers_health_and_leaves_out_a_failed_one():
    peers = PeerSet("a", None)
    peers.update([PeerInfo("b", "127.0.0.1", 1002, 3)])
    b = peers.acquire([], 100.0)
    assert b is not None and b.name == "peer b" and peers.holds(b)
    b.connection_finished()
    b.record_failure(100.0)
    assert peers.acquire([], 101.0) is None, "a lone failed peer is left out (a balancer of one would not)"
    peers.update([PeerInfo("b", "127.0.0.1", 1002, 1), PeerInfo("f", "127.0.0.1", 1006, 5)])
    assert peers.by_node["b"] is b and b.weight == 1, "b stays the same server, failure and all"
    f = peers.acquire([], 101.0)
    assert f is not None and f.name == "peer f"
    assert peers.acquire([f], 101.0) is None
    assert peers.acquire([], 100.0 + 6.0) is not None, "past its fail_timeout b may be tried again"
    peers.update([])
    assert not peers.holds(b) and b.down
    marked = peers.mark(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert marked == b"GET / HTTP/1.1\r\nX-Ukproxy-Spilled-From: a\r\nHost: x\r\n\r\n"


def test_peers_take_spilled_requests_in_proportion_to_their_room():
    peers = PeerSet("a", None)
    peers.update([PeerInfo("b", "127.0.0.1", 1002, 3), PeerInfo("c", "127.0.0.1", 1003, 1)])
    picked = []
    for _ in range(8):
        server = peers.acquire([], 100.0)
        assert server is not None
        picked.append(server.name)
        server.connection_finished()
    assert picked.count("peer b") == 6 and picked.count("peer c") == 2


def test_the_spill_key_is_a_boolean():
    assert loads(CONFIG, "node.toml").cluster.spill is True
    assert loads(CONFIG + "spill = false\n", "node.toml").cluster.spill is False
    with pytest.raises(ConfigError) as raised:
        loads(CONFIG + 'spill = "no"\n', "node.toml")
    assert "cluster.spill" in str(raised.value)
