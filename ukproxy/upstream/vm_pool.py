"""A worker's own pool of VMs for one upstream: a source of servers for its balancer.

The pool keeps `min` VMs, grows to `max` when every VM is at `max_conns` (overflow "spawn") or
makes requests wait up to `queue_timeout` for a free slot (overflow "queue"), and stops VMs above
`min` that stayed idle for `idle_timeout` (surplus "destroy"). Booting and stopping are asked of the
master over the control channel; the pool only changes its server list when the master answers.
Active health checks (`health`; a TCP connect by default) take a VM out of rotation after `fails`
failures and back after `passes` successes; a VM that stays out is replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ukproxy import metrics
from ukproxy.config import UpstreamConfig
from ukproxy.protocol import Message, VmBoot, VmInfo, VmStop
from ukproxy.upstream.health import HealthCheck
from ukproxy.upstream.server import Server

log = logging.getLogger("ukproxy.pool")


@dataclass(eq=False)
class PoolVm:
    vm_id: str
    server: Server
    cpu: int | None
    idle_since: float
    stopping: bool = False
    health: HealthCheck | None = field(default=None, repr=False)


class VmPool:
    def __init__(self, config: UpstreamConfig, loop: asyncio.AbstractEventLoop,
                 send: Callable[[Message], None], on_change: Callable[[list[Server]], None]):
        assert config.vm is not None
        self.config = config
        self.name = config.name
        self.settings = config.pool  # sizes and overflow/surplus policies
        self.loop = loop
        self.send = send  # to the master
        self.on_change = on_change  # the balancer's new server list
        self.vms: dict[str, PoolVm] = {}
        self.booting = 0
        self.requests = itertools.count(1)
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.running = False
        self.replacements = 0
        self.boot_failures = 0
        self.queue_timeouts = 0
        self._surplus_task: asyncio.Task[None] | None = None

    # membership

    def start(self, adopted: list[VmInfo]) -> None:
        self.running = True
        for vm in adopted:
            self._add(vm)
        for entry in list(self.vms.values())[self.settings.max:]:
            self._retire(entry, f"above max ({self.settings.max}) after a reload")
        self._fill_to_min()
        if self.settings.surplus == "destroy" and not self.settings.stateful:  # a stateful VM is never surplus
            self._surplus_task = self.loop.create_task(self._surplus_loop())

    def stop(self) -> None:
        """This worker is leaving: stop managing (the VMs belong to the slot and stay)."""
        self.running = False
        if self._surplus_task is not None:
            self._surplus_task.cancel()
        for vm in self.vms.values():
            if vm.health is not None:
                vm.health.stop()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fill_to_min(self) -> None:
        while self.running and len(self.vms) + self.booting < self.settings.min:
            self._request_boot("min")

    def _request_boot(self, why: str) -> None:
        self.booting += 1
        self.send(VmBoot(self.name, next(self.requests), why))

    def booted(self, vm: VmInfo) -> None:
        self.booting = max(0, self.booting - 1)
        if not self.running:
            self.send(VmStop(vm.id))
            return
        self._add(vm)

    def boot_failed(self, reason: str) -> None:
        self.booting = max(0, self.booting - 1)
        self.boot_failures += 1
        log.error("upstream %s: VM boot failed: %s", self.name, reason)
        if self.running and len(self.vms) + self.booting < self.settings.min:
            # Try again, but not in a tight loop.
            self.loop.call_later(1.0, self._fill_to_min)

    def _add(self, vm: VmInfo) -> None:
        server = Server(host=vm.host, port=vm.port, max_conns=self.settings.max_conns,
                        max_fails=1, fail_timeout=2.0, name=vm.id)
        entry = PoolVm(vm.id, server, vm.cpu, idle_since=self.loop.time())
        self.vms[entry.vm_id] = entry
        if self.config.health is not None:
            entry.health = HealthCheck(server, self.config.health, self.name, self.loop,
                                       on_failing=lambda: self._replace_unhealthy(entry))
            entry.health.start()
        self._publish()
        self._wake(len(self.waiters))
        log.info("upstream %s: VM %s in rotation (%s:%d)", self.name, entry.vm_id, vm.host, vm.port)

    def exited(self, vm_id: str) -> None:
        """The master says the VM is gone (it died, or we asked it to stop)."""
        entry = self.vms.pop(vm_id, None)
        if entry is None:
            return
        if entry.health is not None:
            entry.health.stop()
        self._publish()
        if not entry.stopping:
            self.replacements += 1
            # Out of rotation above; what is still on its way to it would wait for a timeout.
            cut = entry.server.cut_off()
            log.warning("upstream %s: VM %s died; replacing (%d connections to it cut off)", self.name, vm_id, cut)
        self._fill_to_min()

    def _retire(self, entry: PoolVm, why: str) -> None:
        entry.stopping = True
        entry.server.down = True  # no new requests; the open ones finish
        if entry.health is not None:
            entry.health.stop()
        self._publish()
        log.info("upstream %s: stopping VM %s (%s)", self.name, entry.vm_id, why)
        self.send(VmStop(entry.vm_id))

    def _publish(self) -> None:
        self.on_change([vm.server for vm in self.vms.values() if not vm.stopping])

    # capacity

    def live_count(self) -> int:
        return sum(1 for vm in self.vms.values() if not vm.stopping)

    def can_grow(self) -> bool:
        """Whether a request that finds every VM busy may have a VM booted for it (else it queues)."""
        # A stateful VM's successor boots only once it has exited: two must never hold its share at once.
        counted = len(self.vms) if self.settings.stateful else self.live_count()
        return self.running and self.settings.overflow == "spawn" and counted + self.booting < self.settings.max

    def queue_deadline(self, now: float) -> float:
        """Until when a request that finds no free VM at `now` may wait for one (queue_timeout)."""
        return now + self.settings.queue_timeout

    async def wait_for_capacity(self, deadline: float) -> bool:
        """Called when the balancer found no free VM: grow or queue until `deadline` (loop time).
        False when the wait timed out."""
        remaining = deadline - self.loop.time()
        if not self.running or remaining <= 0:
            if remaining <= 0:
                self.queue_timeouts += 1
            return False
        if self.can_grow():
            self._request_boot("overflow")
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        metrics.pool_queue(self.name, len(self.waiters))
        queued_at = self.loop.time()
        try:
            await asyncio.wait_for(waiter, remaining)
            metrics.queue_wait(self.name, self.loop.time() - queued_at)
            return True
        except TimeoutError:
            self.queue_timeouts += 1
            return False
        finally:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            metrics.pool_queue(self.name, len(self.waiters))

    def released(self, server: Server) -> None:
        """A connection to `server` finished: it has a free slot for one waiter."""
        if server.active == 0:
            entry = self.vms.get(server.name)
            if entry is not None:
                entry.idle_since = self.loop.time()
        if self.waiters:
            self._wake(1)

    def _wake(self, n: int) -> None:
        while n > 0 and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    @property
    def queue_length(self) -> int:
        return len(self.waiters)

    # surplus

    async def _surplus_loop(self) -> None:
        period = max(0.05, min(self.settings.idle_timeout / 2, 5.0))
        while self.running:
            await asyncio.sleep(period)
            now = self.loop.time()
            surplus = self.live_count() - self.settings.min
            for entry in sorted(self.vms.values(), key=lambda e: e.idle_since):
                if surplus <= 0:
                    break
                idle = now - entry.idle_since
                if not entry.stopping and entry.server.active == 0 and idle >= self.settings.idle_timeout:
                    self._retire(entry, f"idle for {idle:.1f}s above min")
                    surplus -= 1

    # health

    def _replace_unhealthy(self, entry: PoolVm) -> None:
        self.replacements += 1
        metrics.vm_replaced(self.name, "unhealthy")
        self._retire(entry, "unhealthy")
        self._fill_to_min()
