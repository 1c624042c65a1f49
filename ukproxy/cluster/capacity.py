"""A node's capacity per upstream, from what the master already knows: its fleet's VMs, its pools' room
to grow, and the requests its workers' pools have queued (their multiprocess gauge)."""

from __future__ import annotations

import logging
from typing import Any

from ukproxy.config import Config
from ukproxy.metrics import multiproc

log = logging.getLogger("ukproxy.cluster")


def queued_requests() -> dict[str, int]:
    """Requests waiting for a VM, per upstream, summed over live workers (read from the metric files:
    blocking, so call it off the loop)."""
    path = multiproc.directory()
    if not path:
        return {}
    from prometheus_client import multiprocess
    from prometheus_client.registry import CollectorRegistry

    out: dict[str, int] = {}
    try:
        families = multiprocess.MultiProcessCollector(CollectorRegistry(), path).collect()
        for family in families:
            if family.name == "ukproxy_pool_queue_length":
                for s in family.samples:
                    up = s.labels.get("upstream", "")
                    out[up] = out.get(up, 0) + int(s.value)
    except (OSError, ValueError) as e:  # a worker's file may vanish while read
        log.debug("queue lengths unread: %s", e)
    return out


def capacity(config: Config, vms: list[Any], queues: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per upstream: ready servers (running VMs, or static servers not down), free slots (VMs the pools
    may still boot) and queued requests."""
    out: dict[str, dict[str, int]] = {}
    for u in config.upstreams:
        if u.vm is None:
            ready = sum(1 for s in u.servers if not s.down)
            out[u.name] = {"ready": ready, "free": 0, "queue": 0}
            continue
        mine = [vm for vm in vms if vm.upstream == u.name and not vm.retiring and not vm.stopping]
        ready = sum(1 for vm in mine if vm.qemu.state == "running")
        room = max(0, u.pool.max * config.workers - len(mine))
        out[u.name] = {"ready": ready, "free": room, "queue": queues.get(u.name, 0)}
    return out
