"""A shared config applied while the node is busy: a WebSocket open across the push, and a SIGHUP fired at
the same moment as a push (the two reloads run one after the other and end in one consistent config).
The node is a master in a network namespace of its own (tests/cluster/conftest.py)."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import Node
from tests.cluster.etcd_server import Etcd
from tests.cluster.node_network import NodeNetwork
from tests.proxy.backends import Backend
from tests.waiting import wait_until


@pytest.fixture
def node(tmp_path: Path, etcd: Etcd, hub: NodeNetwork) -> Iterator[Callable[..., Node]]:
    """One node in a cluster of its own name, with a backend of the given name in its own subnet."""
    made: list[Node] = []

    def make(backend: str, extra: str = "") -> Node:
        made.append(Node(tmp_path, etcd, "a", hub.node(1), backend, cluster=f"apply{uuid.uuid4().hex[:6]}",
                         extra=extra))
        return made[-1].start_node()

    yield make
    for n in made:
        n.stop()
        n.backend.close()


def shared(backend: Backend) -> str:
    return f'[[upstream]]\nname = "web"\nservers = ["{backend.address}"]\n'


def answers(node: Node, body_start: str) -> bool:
    status, body = node.get()
    return status == 200 and body.startswith(body_start)


async def test_a_websocket_stays_open_across_a_push(etcd, node, backends):
    new = backends("new")
    a = node("old", extra='worker_shutdown_timeout = "60s"')
    old = a.backend
    first = {w.pid for w in a.workers()}
    key = f"/ukproxy/{a.cluster()['cluster']}/config"
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://{a.address}:{a.port}/ws") as ws:
        await ws.send_str("before")
        assert (await asyncio.wait_for(ws.receive(), 10)).data == "before"

        revision = await asyncio.to_thread(etcd.put, key, shared(new))
        await asyncio.to_thread(wait_until, a.cluster, "the push applied",
                                accept=lambda s: s["config_revision"] == revision, timeout=30, context=a.log)
        await asyncio.to_thread(wait_until, lambda: answers(a, "new"), "new requests on the pushed upstream")
        # The old worker drains: it holds the WebSocket, which goes on working through it.
        assert first <= {w.pid for w in a.workers()}
        for i in range(3):
            await ws.send_str(f"after {i}")
            assert (await asyncio.wait_for(ws.receive(), 10)).data == f"after {i}"
        assert old.requests[("GET", "/ws")] == 1 and new.requests[("GET", "/ws")] == 0
        await ws.close()
    # Closed, the old worker has nothing left and exits (long before its 60 s shutdown timeout).
    await asyncio.to_thread(wait_until, lambda: first & {w.pid for w in a.workers()}, "the old worker to exit",
                            accept=lambda left: not left, timeout=30, context=a.log)


def test_a_sighup_and_a_push_at_once_reload_one_after_the_other(etcd, node, backends):
    new = backends("new")
    a = node("old")
    key = f"/ukproxy/{a.cluster()['cluster']}/config"
    wait_until(a.cluster, "a registered", accept=lambda s: s["etcd"] == "connected" and s["registrations"] == 1,
               timeout=30, context=a.log)
    revision = etcd.put(key, shared(new))
    a.signal(signal.SIGHUP)  # while the node's watch hears of the push: two reloads asked for at once
    wait_until(a.cluster, "the push applied", accept=lambda s: s["config_revision"] == revision, timeout=30,
               context=a.log)
    status = wait_until(a.status, "both reloads done", accept=lambda s: s and s["master"]["generation"] == 2,
                        timeout=30, context=a.log)
    assert status is not None
    a.wait_workers(1)
    assert answers(a, "new"), "whichever reload came last, the pushed config runs"
    # One after the other: each reload's new worker started and the reload finished before the next began.
    steps = re.findall(r"worker 0 started|reloaded: generation \d+", a.log())
    assert steps == ["worker 0 started", "worker 0 started", "reloaded: generation 1",
                     "worker 0 started", "reloaded: generation 2"], steps
    assert a.cli("reload").returncode == 0
    wait_until(a.status, "a third reload", accept=lambda s: s and s["master"]["generation"] == 3, timeout=30)
    assert answers(a, "new")

