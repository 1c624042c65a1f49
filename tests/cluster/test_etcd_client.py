"""The etcd client against a real etcd-server: what the nodes rely on (compares, leases, watches, compaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd_server import Etcd
from ukproxy.cluster.etcd import Compacted, EtcdClient, EtcdError, compare, put_op


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    """On loopback: the client alone is under test here, with no nodes (and so no namespaces)."""
    server = Etcd(tmp_path).start()
    yield server
    server.remove()


async def test_a_watch_from_a_compacted_revision_says_so(etcd):
    client = EtcdClient([etcd.url])
    try:
        first = await client.put("/k", "1")
        for value in "234":
            last = await client.put("/k", value)
        await client.compact(last)
        with pytest.raises(Compacted) as raised:
            async for _ in client.watch("/k", first):
                pass
        assert raised.value.compact_revision == last
        # From the revision read, the watch sees the next change.
        kvs, revision = await client.get("/k")
        assert kvs[0].value == b"4"

        async def next_change() -> bytes:
            async for events in client.watch("/k", revision + 1):
                return events[-1].kv.value
            return b""

        waiting = asyncio.create_task(next_change())
        await client.put("/k", "5")
        assert await asyncio.wait_for(waiting, 30) == b"5"
    finally:
        await client.close()


async def test_a_create_only_transaction_and_a_lease_that_takes_its_key(etcd):
    client = EtcdClient(["http://127.0.0.1:1", etcd.url])  # the first endpoint is down: the next answers
    try:
        lease = await client.grant(2)
        ok, _ = await client.txn([compare("/n", "CREATE", 0)], [put_op("/n", "a", lease)])
        assert ok
        ok, _ = await client.txn([compare("/n", "CREATE", 0)], [put_op("/n", "b")])
        assert not ok, "a second create of the same key must fail"
        assert await client.keepalive(lease) == 2
        await client.revoke(lease)
        assert (await client.get("/n"))[0] == []
        assert await client.keepalive(lease) == 0, "a revoked lease renews to nothing"
        with pytest.raises(EtcdError):
            await client.put("/n", "c", lease)  # a put under a gone lease is refused, not made leaseless
    finally:
        await client.close()
