"""A small asyncio client for etcd v3 through its JSON gRPC gateway (etcd 3.4: /v3/kv/range, /v3/watch...).

Why the gateway over aiohttp rather than a gRPC client such as aetcd: every etcd since 3.4 serves it on
the client port, it needs no grpcio build, and aiohttp is already ours. Keys and values travel base64
encoded; numbers as strings; fields at their zero value are left out of answers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

REQUEST_TIMEOUT = 5.0  # one unary call; etcd answers in milliseconds when it is up
CONNECT_TIMEOUT = 2.0
WATCH_LINE_MAX = 4 * 1024 * 1024  # one watch message (a config value is bounded well below this)


class EtcdError(Exception):
    """etcd could not be reached, or refused the request (`reason` says which)."""


class Compacted(EtcdError):
    """A watch asked for history that etcd has compacted away: re-read everything."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True)
class Event:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    """The range_end covering every key that starts with `prefix` (its last byte plus one)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(raw.get("key", "")).decode(errors="replace"),
        value=base64.b64decode(raw.get("value", "")),
        mod_revision=int(raw.get("mod_revision", 0)),
        create_revision=int(raw.get("create_revision", 0)),
        lease=int(raw.get("lease", 0)),
    )


def put_op(key: str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    op: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        op["lease"] = str(lease)
    return {"request_put": op}


def compare(key: str, target: str, value: int) -> dict[str, Any]:
    """A txn condition `key`'s target (CREATE, MOD or LEASE) equals `value` (0: the key is absent)."""
    field = {"CREATE": "create_revision", "MOD": "mod_revision", "LEASE": "lease"}[target]
    return {"key": b64(key), "target": target, "result": "EQUAL", field: str(value)}


class EtcdClient:
    """Unary calls go to the first endpoint that answers; the one that answered is tried first next time."""

    def __init__(self, endpoints: Sequence[str]):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT))
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        failures = []
        for i, endpoint in enumerate(self.endpoints):
            try:
                async with self._session().post(endpoint + path, json=body) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                failures.append(f"{endpoint}: {e.__class__.__name__} {e}".strip())
                continue
            answer = _json(text, endpoint + path)
            if resp.status != 200 or "error" in answer:
                raise EtcdError(f"{endpoint}{path}: {answer.get('message') or answer.get('error') or resp.status}")
            if i:
                self.endpoints.insert(0, self.endpoints.pop(i))
            return answer
        raise EtcdError("etcd unreachable: " + "; ".join(failures))

    # keys

    async def get(self, key: str, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix) and the store's revision when read."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        answer = await self.call("/v3/kv/range", body)
        return [_kv(kv) for kv in answer.get("kvs", [])], int(answer["header"].get("revision", 0))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        answer = await self.call("/v3/kv/put", put_op(key, value, lease)["request_put"])
        return int(answer["header"].get("revision", 0))

    async def txn(self, compares: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None) -> tuple[bool, dict[str, Any]]:
        answer = await self.call("/v3/kv/txn", {"compare": compares, "success": success, "failure": failure or []})
        return bool(answer.get("succeeded", False)), answer

    async def delete(self, key: str) -> None:
        await self.call("/v3/kv/deleterange", {"key": b64(key)})

    async def compact(self, revision: int) -> None:
        await self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    # leases

    async def grant(self, ttl: int) -> int:
        answer = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew the lease once; its remaining TTL, 0 when it has expired (its keys are gone)."""
        answer = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # watches

    async def watch(self, key: str, start_revision: int, prefix: bool = False) -> AsyncIterator[list[Event]]:
        """Yield each batch of changes to the key from `start_revision` on. Ends (raises EtcdError) when
        the stream breaks; raises Compacted when that history is gone."""
        request: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
        if prefix:
            request["range_end"] = prefix_end(key)
        session = self._session()
        endpoint = self.endpoints[0]
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=None)
        try:
            async with session.post(endpoint + "/v3/watch", json={"create_request": request}, timeout=timeout,
                                    read_bufsize=WATCH_LINE_MAX) as resp:
                if resp.status != 200:
                    raise EtcdError(f"{endpoint}/v3/watch: HTTP {resp.status}")
                async for line in resp.content:
                    message = _json(line.decode(errors="replace"), endpoint + "/v3/watch")
                    if "error" in message:
                        raise EtcdError(f"{endpoint}/v3/watch: {message['error'].get('message', message['error'])}")
                    result = message.get("result", {})
                    if int(result.get("compact_revision", 0)):
                        raise Compacted(int(result["compact_revision"]))
                    if result.get("canceled"):
                        raise EtcdError(f"{endpoint}/v3/watch: canceled: {result.get('cancel_reason', '')}")
                    events = [Event(e.get("type", "PUT"), _kv(e.get("kv", {}))) for e in result.get("events", [])]
                    if events:
                        yield events
        except (aiohttp.ClientError, OSError) as e:
            raise EtcdError(f"{endpoint}/v3/watch: {e.__class__.__name__} {e}") from None
        raise EtcdError(f"{endpoint}/v3/watch: the stream ended")


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        answer = json.loads(text)
    except ValueError:
        raise EtcdError(f"{where}: not JSON: {text[:200]!r}") from None
    if not isinstance(answer, dict):
        raise EtcdError(f"{where}: unexpected answer {text[:200]!r}")
    return answer
