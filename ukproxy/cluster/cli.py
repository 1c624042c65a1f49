"""`ukproxy cluster push FILE` and `ukproxy cluster status`: the operator's view of the cluster, from etcd."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ukproxy.cluster.keys import Keys
from ukproxy.cluster.shared_config import merged_text, parse_shared
from ukproxy.config import ClusterConfig, ConfigError, load, loads

if TYPE_CHECKING:
    from ukproxy.cluster.etcd import EtcdClient


def add_parser(sub: Any, default_config: str) -> None:
    p = sub.add_parser("cluster", help="the cluster in etcd: push the shared config, show the nodes")
    csub = p.add_subparsers(dest="cluster_command", required=True)
    push = csub.add_parser("push", help="validate FILE (upstreams, routes, [http]) and make it the shared config")
    push.add_argument("file", help="the shared part: [[upstream]], [[route]] and [http] only")
    push.add_argument("--revision", type=int, default=None,
                      help="write only if the shared config is still at this revision (0: there is none yet)")
    push.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                      help="wait up to this long for every node to report what it did with the push")
    status = csub.add_parser("status", help="the nodes, their states, capacity and the config revision each runs")
    status.add_argument("--json", action="store_true", help="print the raw records")
    for q in (push, status):
        q.add_argument("-c", "--config", default=default_config, help="this node's configuration (its [cluster])")


def cmd_cluster(args: argparse.Namespace) -> int:
    try:
        local = load(args.config)
    except ConfigError as e:
        for issue in e.issues:
            print(f"ukproxy: {issue}", file=sys.stderr)
        return 1
    if local.cluster is None:
        print(f"ukproxy: {args.config} has no [cluster] section", file=sys.stderr)
        return 1
    import asyncio

    from ukproxy.cluster.etcd import EtcdError  # aiohttp: imported by this command only, not by every ukproxy one

    run = _push if args.cluster_command == "push" else _status
    try:
        return asyncio.run(run(args, local.cluster))
    except EtcdError as e:
        print(f"ukproxy: {e}", file=sys.stderr)
        return 1


async def _push(args: argparse.Namespace, cluster: ClusterConfig) -> int:
    try:
        text = Path(args.file).read_text()
        local_text = Path(args.config).read_text()
        # Valid on its own, and merged with this node's local file as a node will merge it.
        loads(merged_text(local_text, parse_shared(text, args.file)), f"{args.config} + {args.file}")
    except OSError as e:
        print(f"ukproxy: {e.filename}: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    except ConfigError as e:
        for issue in e.issues:
            print(f"ukproxy: {issue}", file=sys.stderr)
        print(f"ukproxy: {args.file} not pushed: invalid", file=sys.stderr)
        return 1
    from ukproxy.cluster.etcd import EtcdClient, compare, put_op

    keys = Keys(cluster.name)
    client = EtcdClient(cluster.endpoints)
    try:
        kvs, _ = await client.get(keys.config)
        current = kvs[0].mod_revision if kvs else 0
        expected = current if args.revision is None else args.revision
        ok, answer = await client.txn([compare(keys.config, "MOD", expected)], [put_op(keys.config, text)])
        if not ok:
            print(f"ukproxy: not pushed: the shared config is at revision {current}, not {expected} "
                  "(someone changed it meanwhile); look at it again", file=sys.stderr)
            return 1
        revision = int(answer["header"]["revision"])
        print(f"ukproxy: pushed {args.file} as revision {revision} of {keys.config}")
        return await _wait_for_nodes(client, keys, revision, args.wait) if args.wait > 0 else 0
    finally:
        await client.close()


async def _wait_for_nodes(client: EtcdClient, keys: Keys, revision: int, timeout: float) -> int:
    """Until every registered node reports the revision (applied or refused), within `timeout`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        nodes, statuses = await _read(client, keys)
        pending = [n for n in nodes if statuses.get(n, {}).get("revision", 0) < revision]
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    refused = 0
    for node in sorted(nodes):
        s = statuses.get(node, {})
        if node in pending:
            print(f"  {node}: no answer yet (running revision {s.get('revision', 0)})")
        elif s.get("applied"):
            print(f"  {node}: applied revision {s['revision']}")
        else:
            refused += 1
            print(f"  {node}: refused revision {s['revision']}: {s.get('error')}")
    return 1 if pending or refused else 0


async def _read(client: EtcdClient, keys: Keys) -> tuple[dict[str, Any], dict[str, Any]]:
    nodes = {kv.key[len(keys.nodes):]: _json(kv.value) for kv in (await client.get(keys.nodes, prefix=True))[0]}
    statuses = {kv.key[len(keys.statuses):]: _json(kv.value)
                for kv in (await client.get(keys.statuses, prefix=True))[0]}
    return nodes, statuses


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def node_line(cluster: dict[str, Any]) -> str:
    """This node's view of the cluster, for `ukproxy status`: its id, etcd's state and the config it runs."""
    etcd = cluster.get("etcd", "?")
    if cluster.get("etcd_error"):
        etcd += f" ({cluster['etcd_error']})"
    last = cluster.get("last_config") or {}
    config = f"shared config revision {cluster.get('config_revision', 0) or 'none (local file)'}"
    if last.get("applied") is False:
        config += f"; refused revision {last.get('revision')}: {last.get('error')}"
    spill = "; ".join(f"spills {up} to " + (", ".join(f"{p['node']} ({p['weight']})" for p in peers) or "nobody")
                      for up, peers in sorted((cluster.get("spill_peers") or {}).items()))
    return (f"cluster {cluster.get('cluster', '?')}: node {cluster.get('node', '?')} {cluster.get('state', '?')}, "
            f"etcd {etcd}, {config}" + (f"; {spill}" if spill else ""))


async def _status(args: argparse.Namespace, cluster: ClusterConfig) -> int:
    from ukproxy.cluster.etcd import EtcdClient

    keys = Keys(cluster.name)
    client = EtcdClient(cluster.endpoints)
    try:
        nodes, statuses = await _read(client, keys)
        kvs, revision = await client.get(keys.config)
    finally:
        await client.close()
    shared = kvs[0].mod_revision if kvs else 0
    if args.json:
        print(json.dumps({"cluster": cluster.name, "etcd_revision": revision, "config_revision": shared,
                          "nodes": nodes, "status": statuses}, indent=2))
        return 0
    print(f"cluster {cluster.name}: {len(nodes)} node(s); shared config "
          + (f"revision {shared}" if shared else "not pushed (each node runs its local file)"))
    for node in sorted(nodes):
        record, s = nodes[node], statuses.get(node, {})
        capacity = ", ".join(f"{up} {c.get('ready', 0)} ready/{c.get('free', 0)} free/{c.get('queue', 0)} queued"
                             for up, c in sorted(record.get("capacity", {}).items()))
        config = (f"config {s.get('revision', 0)}" if s.get("applied", True)
                  else f"config {s.get('running', 0)} (refused {s.get('revision')}: {s.get('error')})")
        print(f"  {node:<16} {record.get('state', '?'):<9} {record.get('peer') or '-':<22} {config}; {capacity}")
    return 0
