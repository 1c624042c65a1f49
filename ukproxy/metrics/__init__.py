"""Prometheus metrics (multiprocess): what workers and the master record, and the fleet's hooks.

The request path never touches Prometheus: workers keep plain counters (`tally`, WorkerState)
that `flush` moves into the multiprocess values once a second. The master serves /metrics and
/status (`server`) from every process's files.

The hooks below are for events off the request path (VM boots, placements, pool queues, worker
restarts); they write to Prometheus at once and are no-ops until `enable()` ran in this process
(the master and the workers call it once the multiprocess directory is set). Import-light:
prometheus_client is only imported by `enable()`.
"""

from __future__ import annotations

from types import ModuleType

_families: ModuleType | None = None


def enable() -> None:
    global _families
    from ukproxy.metrics import families

    _families = families


def vm_state_changed(upstream: str, worker: int | None, old: str | None, new: str | None) -> None:
    """A VM moved between states (booting, idle, busy, down); old None for a new VM, new None for a gone one."""
    if _families is None:
        return
    owner = "" if worker is None else str(worker)
    if old is not None:
        _families.VMS.labels(upstream, owner, old).dec()
    if new is not None:
        _families.VMS.labels(upstream, owner, new).inc()


def vm_booted(upstream: str, seconds: float) -> None:
    """A VM said `ready`, `seconds` after QEMU started."""
    if _families is not None:
        _families.VM_BOOT_DURATION.labels(upstream).observe(seconds)


def vm_replaced(upstream: str, reason: str) -> None:
    """A VM was replaced: reason is a short word (crashed, unhealthy, boot_timeout, ...)."""
    if _families is not None:
        _families.VM_REPLACEMENTS.labels(upstream, reason).inc()


def health_checked(upstream: str, server: str, ok: bool, at: float) -> None:
    """An active health check of `server` ran at Unix time `at` and passed (or not)."""
    if _families is not None:
        _families.SERVER_LAST_CHECK.labels(upstream, server).set(at)
        _families.SERVER_CHECK_OK.labels(upstream, server).set(1 if ok else 0)


def placement(cpu: int) -> None:
    """The scheduler placed a VM on `cpu`."""
    if _families is not None:
        _families.VM_PLACEMENTS.labels(str(cpu)).inc()


def pool_queue(upstream: str, length: int) -> None:
    """This process's queue for the upstream's VMs is now `length` long (summed over live processes)."""
    if _families is not None:
        _families.POOL_QUEUE_LENGTH.labels(upstream).set(length)


def queue_wait(upstream: str, seconds: float) -> None:
    """A request left the pool queue (with a VM or by queue_timeout) after waiting `seconds`."""
    if _families is not None:
        _families.POOL_QUEUE_WAIT.labels(upstream).observe(seconds)


def worker_restarted(worker: int) -> None:
    if _families is not None:
        _families.WORKER_RESTARTS.labels(str(worker)).inc()


def worker_hung(worker: int) -> None:
    """A worker's heartbeat was late past worker_heartbeat_timeout: it was killed (and is replaced)."""
    if _families is not None:
        _families.WORKER_HUNG.labels(str(worker)).inc()
