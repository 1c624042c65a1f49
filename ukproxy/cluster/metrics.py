"""The cluster's metrics, written by the master (prometheus_client is imported only once its
multiprocess directory is set, hence the lazy families)."""

from __future__ import annotations

from typing import Any

_families: dict[str, Any] = {}


def _family(name: str) -> Any:
    if not _families:
        from prometheus_client import Counter, Gauge

        _families["up"] = Gauge("ukproxy_cluster_etcd_up", "1 while this node reaches etcd, else 0.",
                                multiprocess_mode="max")
        _families["writes"] = Counter("ukproxy_cluster_etcd_writes", "Writes this node made to etcd.", ["what"])
        _families["revision"] = Gauge("ukproxy_cluster_config_revision",
                                      "etcd revision of the shared config this node runs (0: its local file).",
                                      multiprocess_mode="max")
        _families["refused"] = Counter("ukproxy_cluster_config_refused",
                                       "Shared configs this node refused (invalid here).")
    return _families[name]


def etcd_up(up: bool) -> None:
    _family("up").set(1 if up else 0)


def wrote(what: str) -> None:
    _family("writes").labels(what).inc()


def config_applied(revision: int) -> None:
    _family("revision").set(revision)


def config_refused() -> None:
    _family("refused").inc()
