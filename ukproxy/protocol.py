"""What the master and its workers say to each other: control messages, exit codes, counter keys.

Control messages are frozen dataclasses, one per kind, sent as one JSON object per line with the kind
under "type" (see `control`). No version field: master and workers are one host and one build. A
message of an unknown kind, or one missing a field, is a ProtocolError naming what was wrong.

Exit codes are what a worker tells the master by dying: EXIT_CONFIG stops the master instead of a
respawn loop.

Counter keys are what workers count on the request path between two metric flushes: a tuple
(Event, label, label), cheap to build and hash, that the flusher maps to a Prometheus family
without parsing anything back.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ukproxy.privileges import Identity

# exit codes

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # an unexpected error: respawned, with a backoff when it happens at start-up
EXIT_CONFIG: Final = 3  # the worker cannot run this config (e.g. RLIMIT_NOFILE): never respawned


def describe_exit(status: int) -> str:
    """A wait status in words, for the log: "exited with code 3", "killed by signal 9 (SIGKILL)"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {sig} ({name})"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


# control messages


class ProtocolError(ValueError):
    """A control message that is not one of ours (unknown kind, missing or extra field)."""


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Message:
        return cls(**fields)


@dataclass(frozen=True)
class VmInfo:
    """What a worker knows of one VM: where to connect, and for the log its CPU and boot time."""

    id: str
    upstream: str
    host: str
    port: int
    cpu: int | None = None
    boot_seconds: float | None = None


# master → worker


@dataclass(frozen=True)
class Init(Message):
    """First message to a new worker: the validated config and its place."""

    TYPE: ClassVar[str] = "init"
    worker: int
    config_text: str
    config_path: str
    cpu: int | None
    listen_fds: list[int]
    lock_path: str | None  # the accept mutex's lock file, None without the mutex
    netns: str | None  # the backend namespace for upstream sockets, None on loopback
    identity: Identity | None  # the unprivileged user to drop to, None when not root
    nofile: int
    heartbeat_interval: float
    vms: list[VmInfo]  # the slot's VMs, adopted by the pools
    ticket_keys: list[str] = dataclasses.field(default_factory=list)  # TLS session ticket keys (tls/tickets.py)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Message:
        identity = fields.pop("identity")
        vms = fields.pop("vms")
        return cls(**fields, identity=Identity(**identity) if identity else None,
                   vms=[VmInfo(**vm) for vm in vms])


@dataclass(frozen=True)
class VmBooted(Message):
    TYPE: ClassVar[str] = "vm_booted"
    vm: VmInfo

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Message:
        return cls(vm=VmInfo(**fields.pop("vm")), **fields)


@dataclass(frozen=True)
class VmBootFailed(Message):
    TYPE: ClassVar[str] = "vm_boot_failed"
    upstream: str
    reason: str


@dataclass(frozen=True)
class PeerInfo:
    """A peer node that may take spilled requests for an upstream, weighted by its free capacity."""

    node: str
    host: str
    port: int
    weight: int


@dataclass(frozen=True)
class Peers(Message):
    """Per upstream, the peer nodes to spill to when this worker's pool is full (docs/cluster.md)."""

    TYPE: ClassVar[str] = "peers"
    upstreams: dict[str, list[PeerInfo]]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Message:
        return cls({name: [PeerInfo(**p) for p in peers] for name, peers in fields.pop("upstreams").items()})


@dataclass(frozen=True)
class VmExited(Message):
    """A VM of the worker's slot is gone: it died, or it stopped as the worker asked."""

    TYPE: ClassVar[str] = "vm_exited"
    vm: str
    upstream: str


@dataclass(frozen=True)
class TicketKeys(Message):
    """The TLS session ticket keys after a rotation, hex, current first (tls/tickets.py)."""

    TYPE: ClassVar[str] = "ticket_keys"
    keys: list[str]


# worker → master


@dataclass(frozen=True)
class Ready(Message):
    """The worker accepts connections."""

    TYPE: ClassVar[str] = "ready"
    worker: int
    pid: int


@dataclass(frozen=True)
class Heartbeat(Message):
    """The worker's loop still turns: sent every `heartbeat_interval` (see Init)."""

    TYPE: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class VmBoot(Message):
    """Boot a VM for the worker's pool of `upstream`; `why` is for the log (min, overflow, replace)."""

    TYPE: ClassVar[str] = "vm_boot"
    upstream: str
    req: int
    why: str


@dataclass(frozen=True)
class VmStop(Message):
    TYPE: ClassVar[str] = "vm_stop"
    vm: str


KINDS: Final[dict[str, type[Message]]] = {
    kind.TYPE: kind for kind in (Init, VmBooted, VmBootFailed, VmExited, Peers, Ready, Heartbeat, VmBoot, VmStop,
                                  TicketKeys)
}


def from_wire(obj: object) -> Message:
    """The message a decoded JSON object stands for."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a control message must be a JSON object, not {type(obj).__name__}")
    fields = dict(obj)
    kind = fields.pop("type", None)
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown control message type {kind!r}")
    try:
        return cls.from_fields(fields)
    except (TypeError, KeyError, AttributeError) as e:
        raise ProtocolError(f"bad {kind!r} message: {e}") from None


# counter keys


class Event(enum.IntEnum):
    """What workers count besides requests (each key is (Event, label, label), "" for an unused label).
    An IntEnum: its hash is an int's, computed in C, for the per-request bumps."""

    UPSTREAM_FAILED = 1  # (upstream, reason: connect, timeout, reset, protocol, ...)
    UPSTREAM_RETRY = 2  # (upstream, ""): a request or session tried again on another server
    NO_UPSTREAM = 3  # (upstream, ""): no server of the upstream could be reached
    TIMEOUT = 4  # (which, ""): keepalive, client_header, upstream_connect, idle, ...
    ACCEPT_ERROR = 5  # ("", ""): accept() failed (EMFILE and the like)
    ACCEPT_OVER_LIMIT = 6  # ("", ""): accepted past worker_connections, closed at once
    HTTP_REJECTED = 7  # (status, ""): a client's request refused with a 4xx
    HTTP_ERROR = 8  # (reason, ""): an exchange ended in an error answer
    HTTP_STALE_KEEPALIVE = 9  # (upstream, ""): a pooled upstream connection was found closed
    TLS_HANDSHAKE = 20  # (listener, TLS version): a handshake done, full or resumed
    TLS_RESUMPTION = 21  # (listener, ""): a handshake that resumed a session (a ticket)
    TLS_HANDSHAKE_FAILED = 22  # (listener, reason): see tls/acceptor.py for the reasons
    REQUESTS_BY_PROTOCOL = 23  # (listener, protocol: "http/1.0", "http/1.1", "h2"): requests by HTTP version
    SPILLED = 10  # (upstream, ""): a request sent to a peer node because this node's pool was full
    TCP_RELAYED_IN_C = 11  # (listener, ""): a tcp session the C relay served (ukproxy/native/tcp_relay.c)
    HTTP2_STREAMS = 30  # ("", ""): HTTP/2 streams a client opened
    HTTP2_RESETS = 31  # (direction: "received" or "sent", ""): RST_STREAM frames
    HTTP2_GOAWAYS = 32  # (reason, ""): GOAWAY frames sent (drain, idle, rapid_reset, control_flood, ...)


CounterKey = tuple[Event, str, str]

# How the generic `ukproxy_worker_events{event=...}` series names an event that has no family of its own.
EVENT_NAMES: Final[dict[Event, str]] = {
    Event.ACCEPT_OVER_LIMIT: "accept_over_limit",
    Event.HTTP_REJECTED: "http_rejected",
    Event.HTTP_ERROR: "http_errors",
    Event.HTTP_STALE_KEEPALIVE: "http_stale_keepalive",
    Event.SPILLED: "spilled",
    Event.TCP_RELAYED_IN_C: "tcp_relayed_in_c",
}
