"""Where a cluster keeps things in etcd: one prefix per cluster name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    cluster: str

    @property
    def prefix(self) -> str:
        return f"/ukproxy/{self.cluster}/"

    @property
    def config(self) -> str:
        """The shared configuration, TOML text."""
        return self.prefix + "config"

    @property
    def nodes(self) -> str:
        return self.prefix + "nodes/"

    def node(self, node_id: str) -> str:
        """A node's record (JSON, under its lease): state, peer address, capacity."""
        return self.nodes + node_id

    @property
    def statuses(self) -> str:
        return self.prefix + "status/"

    def status(self, node_id: str) -> str:
        """What the node did with the shared config (JSON, under its lease): applied revision, or why not."""
        return self.statuses + node_id
