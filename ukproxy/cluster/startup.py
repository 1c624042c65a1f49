"""Joining at start-up: the first generation of workers already runs the shared config.

Read from etcd within a short bound; when etcd does not answer, from the copy this node keeps of the
last shared config it applied (next to its pid file), so a node restarted during an etcd outage
serves what it last knew rather than its local file alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass

from ukproxy.cluster.etcd import EtcdClient, EtcdError
from ukproxy.cluster.keys import Keys
from ukproxy.cluster.shared_config import load_merged
from ukproxy.config import ClusterConfig, Config, ConfigError

log = logging.getLogger("ukproxy.cluster")

JOIN_TIMEOUT = 3.0  # how long a start waits for etcd before going on with the kept copy


@dataclass(frozen=True)
class Shared:
    text: str
    revision: int


def label(cluster: ClusterConfig, revision: int) -> str:
    return f"etcd {Keys(cluster.name).config}@{revision}"


def kept_copy_path(pid_file: str) -> str:
    return pid_file + ".shared.json"


def keep(pid_file: str, shared: Shared | None) -> None:
    """Remember the shared config now running (atomically: a crash leaves the old copy or the new)."""
    path = kept_copy_path(pid_file)
    if shared is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"revision": shared.revision, "text": shared.text}, f)
    os.replace(tmp, path)


def _kept(pid_file: str) -> Shared | None:
    try:
        with open(kept_copy_path(pid_file)) as f:
            data = json.load(f)
        return Shared(str(data["text"]), int(data["revision"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def _read(cluster: ClusterConfig) -> Shared | None:
    client = EtcdClient(cluster.endpoints)
    try:
        kvs, _ = await asyncio.wait_for(client.get(Keys(cluster.name).config), JOIN_TIMEOUT)
    finally:
        await client.close()
    return Shared(kvs[0].value.decode(), kvs[0].mod_revision) if kvs else None


def join(config: Config) -> tuple[Config, Shared | None]:
    """The config to start with (the local file merged with the shared part) and the shared part used."""
    assert config.cluster is not None
    try:
        shared = asyncio.run(_read(config.cluster))
    except (EtcdError, TimeoutError, UnicodeDecodeError) as e:
        shared = _kept(config.pid_file)
        log.warning("cluster: shared config unread at start (%s); %s", e or "timed out", f"running the kept copy of "
                    f"revision {shared.revision}" if shared else "running the local file until etcd answers")
    if shared is None:
        return config, None
    try:
        return load_merged(config.path, shared.text, label(config.cluster, shared.revision)), shared
    except ConfigError as e:
        log.error("cluster: shared config revision %d does not run here, starting on the local file:\n%s",
                  shared.revision, e)
        return config, None
