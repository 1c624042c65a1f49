"""The shared config: pushed once, applied by every node through its graceful reload, refused where invalid.
Each node is a master in a network namespace of its own; the pushed configs name backends on the hub, which
every node reaches (tests/cluster/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

from tests.cluster.conftest import CLUSTER, records, start_nodes, statuses
from tests.running import REPO
from tests.waiting import wait_until
from ukproxy.cluster.shared_config import dumps

CONFIG_KEY = f"/ukproxy/{CLUSTER}/config"


def shared(backend) -> str:
    return f'[[upstream]]\nname = "web"\nservers = ["{backend.address}"]\n\n[http]\nkeepalive_timeout = "30s"\n'


def push(node, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ukproxy", "cluster", "push", str(path), "-c", str(node.config_path),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=60)


def answers(node, body_start: str) -> bool:
    status, body = node.get()
    return status == 200 and body.startswith(body_start)


def test_a_push_reaches_every_node_and_a_node_down_takes_it_when_it_returns(etcd, nodes, backends, tmp_path):
    new = backends("new")
    a, b, c = start_nodes(*(nodes(n, "old") for n in ("a", "b", "c")))
    wait_until(lambda: records(etcd), "three records", accept=lambda r: len(r) == 3, timeout=30, context=a.log)
    assert answers(a, "old")

    c.stop()  # graceful: its record goes with its lease
    wait_until(lambda: records(etcd), "c gone", accept=lambda r: set(r) == {"a", "b"}, timeout=30)
    file = tmp_path / "shared.toml"
    file.write_text(shared(new))
    pushed = push(a, file, "--wait", "60")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    revision = int(pushed.stdout.split("as revision ")[1].split()[0])
    assert "a: applied revision" in pushed.stdout and "b: applied revision" in pushed.stdout
    for node in (a, b):
        wait_until(lambda n=node: answers(n, "new"), f"{node.node_id} to proxy to the pushed upstream", timeout=30)
        assert node.cluster()["config_revision"] == revision

    c.start_node()
    wait_until(lambda: statuses(etcd).get("c", {}).get("value", {}), "c to report the pushed config",
               accept=lambda s: s.get("revision") == revision and s.get("applied"), timeout=60, context=c.log)
    assert answers(c, "new")

    # A reload (SIGHUP) re-reads the local file and merges the shared config in again.
    reloaded = a.cli("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert answers(a, "new")

    # A push computed against an older revision is refused: someone changed it meanwhile.
    stale = push(a, file, "--revision", str(revision - 1))
    assert stale.returncode == 1 and f"at revision {revision}" in stale.stderr


def test_an_invalid_config_is_refused_before_it_is_pushed(etcd, nodes, tmp_path):
    a = nodes("a", "web").start_node()
    file = tmp_path / "shared.toml"
    file.write_text('[[route]]\nupstream = "nowhere"\n')
    refused = push(a, file)
    assert refused.returncode == 1
    assert "route[0].upstream: no upstream named 'nowhere'" in refused.stderr
    file.write_text('workers = 3\n')
    refused = push(a, file)
    assert refused.returncode == 1 and "workers: not part of the shared config" in refused.stderr
    assert etcd.get_prefix(CONFIG_KEY) == {}


def test_an_invalid_shared_config_is_refused_by_every_node_which_says_why(etcd, nodes):
    a, b = start_nodes(*(nodes(n, "web") for n in ("a", "b")))
    wait_until(lambda: records(etcd), "two records", accept=lambda r: len(r) == 2, timeout=30, context=a.log)
    # Written past `cluster push` (by another tool, say): each node validates it itself.
    revision = etcd.put(CONFIG_KEY, '[[upstream]]\nname = "web"\nservers = ["127.0.0.1:1"]\nbalance = "fastest"\n')
    for node in ("a", "b"):
        outcome = wait_until(lambda n=node: statuses(etcd).get(n, {}).get("value", {}), f"{node} to refuse it",
                             accept=lambda s: s.get("revision") == revision, timeout=30)
        assert outcome["applied"] is False
        assert "upstream[0].balance: must be one of" in outcome["error"]
        assert outcome["running"] == 0
    assert answers(a, "web") and answers(b, "web"), "the old config keeps running"
    shown = subprocess.run([sys.executable, "-m", "ukproxy", "cluster", "status", "-c", str(a.config_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    assert f"refused {revision}" in shown.stdout


def test_losing_etcd_is_not_an_outage(etcd, nodes, backends, tmp_path):
    new = backends("new")
    a, b = start_nodes(*(nodes(n, "old") for n in ("a", "b")))
    wait_until(lambda: records(etcd), "two records", accept=lambda r: len(r) == 2, timeout=30, context=a.log)
    etcd.kill()
    for node in (a, b):
        wait_until(node.cluster, f"{node.node_id} to see etcd gone", accept=lambda s: s["etcd"] == "unreachable",
                   timeout=30, context=node.log)
    for _ in range(20):
        assert answers(a, "old") and answers(b, "old")
    status = a.status()
    assert status is not None and status["cluster"]["etcd_error"]
    shown = a.cli("status")
    assert shown.returncode == 0 and "cluster t: node a ready, etcd unreachable (" in shown.stdout, shown.stdout
    with urllib.request.urlopen(f"http://{a.address}:{a.metrics_port}/metrics", timeout=5) as resp:
        assert "ukproxy_cluster_etcd_up 0.0" in resp.read().decode()

    etcd.start()
    for node in (a, b):
        wait_until(node.cluster, f"{node.node_id} to reach etcd again", accept=lambda s: s["etcd"] == "connected",
                   timeout=60, context=node.log)
    wait_until(lambda: records(etcd), "both records", accept=lambda r: set(r) == {"a", "b"}, timeout=30)
    file = tmp_path / "shared.toml"
    file.write_text(shared(new))
    assert push(a, file, "--wait", "60").returncode == 0  # the watches came back too
    assert answers(a, "new") and answers(b, "new")


def test_the_merged_config_is_written_back_as_equivalent_toml():
    for path in (REPO / "conf").glob("*.toml"):
        data = tomllib.loads(path.read_text())
        assert tomllib.loads(dumps(data)) == data, path
    odd = {"s": 'quote " backslash \\ newline \n control \x01 astral \U0001f600', "f": [1.5, -0.0],
           "t": {"inner": [{"x": {"y": []}}]}, "e": []}
    assert tomllib.loads(dumps(odd)) == odd


def test_a_node_cut_off_from_etcd_serves_on_and_catches_up_past_a_compaction(etcd, nodes, backends, hub):
    new = backends("new")
    a = nodes("a", "old").start_node()
    first = wait_until(lambda: records(etcd), "a's record", accept=lambda r: "a" in r, timeout=30, context=a.log)
    hub.cut_from_etcd(a.namespace)  # the node alone: the hub's clients still reach it
    wait_until(a.cluster, "a to see etcd gone", accept=lambda s: s["etcd"] == "unreachable", timeout=30)
    for server in ("127.0.0.1:1", new.address):  # two pushes it misses, then their history compacted
        last = etcd.put(CONFIG_KEY, f'[[upstream]]\nname = "web"\nservers = ["{server}"]\n')
    etcd.call("/v3/kv/compaction", {"revision": str(last), "physical": True})
    wait_until(lambda: records(etcd), "a's record to expire while cut off", accept=lambda r: "a" not in r,
               timeout=30)
    assert answers(a, "old"), "cut off, the node serves what it last knew"

    hub.heal(a.namespace)
    wait_until(a.cluster, "a to catch up", accept=lambda s: s["config_revision"] == last and s["etcd"] == "connected",
               timeout=60, context=a.log)
    assert answers(a, "new")
    again = wait_until(lambda: records(etcd), "a registered again", accept=lambda r: "a" in r, timeout=30)
    assert again["a"]["lease"] != first["a"]["lease"]


def test_a_node_restarted_while_etcd_is_down_runs_the_shared_config_it_last_applied(etcd, nodes, backends, tmp_path):
    new = backends("new")
    a = nodes("a", "old").start_node()
    wait_until(lambda: records(etcd), "a's record", accept=lambda r: "a" in r, timeout=30, context=a.log)
    file = tmp_path / "shared.toml"
    file.write_text(shared(new))
    assert push(a, file, "--wait", "60").returncode == 0
    revision = a.cluster()["config_revision"]
    a.stop()
    etcd.kill()

    a.start_node()
    assert answers(a, "new"), "started on its kept copy of the shared config, not its local file alone"
    assert a.cluster()["config_revision"] == revision
    etcd.start()
    wait_until(a.cluster, "a to reach etcd", accept=lambda s: s["etcd"] == "connected", timeout=60, context=a.log)
    wait_until(lambda: statuses(etcd).get("a", {}).get("value", {}), "a's status",
               accept=lambda s: s.get("revision") == revision and s.get("applied"), timeout=30)
    status = a.status()
    assert status is not None and status["master"]["generation"] == 0, "the same revision needs no reload"
