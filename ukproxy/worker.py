"""One worker process: a uvloop event loop, its listeners, its accept cycle and its upstreams.

Started by the master as `python -m ukproxy.worker` with the listening sockets and one end of the
control channel passed as file descriptors; the first control message carries the validated config.
Signals: QUIT stops accepting and lets open connections finish (bounded by
`worker_shutdown_timeout`); TERM and INT stop at once. A closed control channel (the master is
gone) is taken as QUIT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvloop

from ukproxy import control
from ukproxy.accept import AcceptMutex
from ukproxy.accept_cycle import AcceptCycle, Listener
from ukproxy.config import Config, ListenConfig, loads
from ukproxy.logs import setup_logging
from ukproxy.metrics.worker_side import WorkerObservability
from ukproxy.privileges import Identity, PrivilegeError, drop_privileges, preload_late_imports, raise_nofile_limit
from ukproxy.proxy.tcp import TcpClientSide
from ukproxy.upstream.group import UpstreamGroup
from ukproxy.upstream.health import HealthCheck, check_servers
from ukproxy.upstream.vm_pool import VmPool
from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.worker")

EXIT_CONFIG = 3  # the worker cannot start with this config: the master must not respawn in a loop


class Worker:
    def __init__(self, config: Config, worker_id: int, sockets: list[socket.socket],
                 channel: control.ControlChannel, lock_path: str | None):
        self.config = config
        self.worker_id = worker_id
        self.loop = asyncio.get_running_loop()
        self.channel = channel
        self.state = WorkerState(self.loop, worker_id, config.worker_connections)
        self.groups = {u.name: UpstreamGroup(u, self.loop) for u in config.upstreams}
        self.vm_pools: dict[str, VmPool] = {}
        self.health_checks: list[HealthCheck] = []
        for u in config.upstreams:
            if u.vm is not None:
                group = self.groups[u.name]
                group.vm_pool = self.vm_pools[u.name] = VmPool(u, self.loop, channel.send, group.set_servers)
        self.listeners = [
            Listener(sock, self._protocol_factory(lc), lc.address)
            for lc, sock in zip(config.listen, sockets, strict=True)
        ]
        mutex = AcceptMutex(lock_path) if lock_path else None
        self.cycle = AcceptCycle(self.state, self.listeners, mutex, config.accept_mutex_delay, config.multi_accept)
        # metrics (with each upstream server's figures), access log
        self.observability = WorkerObservability(config, worker_id, self.state, self.cycle, self.groups)
        self.stopped = asyncio.Event()
        self.graceful = False

    def _protocol_factory(self, lc: ListenConfig) -> Callable[[], asyncio.Protocol]:
        if lc.protocol == "tcp":
            group = self.groups[lc.upstream]  # type: ignore[index]
            state = self.state
            return lambda: TcpClientSide(state, group, lc.address)
        from ukproxy.proxy.http import http_protocol_factory

        return http_protocol_factory(self.state, self.config, lc, self.groups)

    async def run(self, adopted_vms: list[dict[str, Any]] | None = None) -> None:
        self.loop.add_signal_handler(signal.SIGQUIT, self.quit)
        self.loop.add_signal_handler(signal.SIGTERM, self.terminate)
        self.loop.add_signal_handler(signal.SIGINT, self.terminate)
        self.loop.add_signal_handler(signal.SIGUSR1, self.observability.reopen_logs)  # logrotate
        for u in self.config.upstreams:  # a VM pool checks its own VMs; static servers are checked here
            if u.vm is None and u.health is not None:
                self.health_checks += check_servers(self.groups[u.name].servers, u.health, u.name, self.loop)
        for name, pool in self.vm_pools.items():
            pool.start([vm for vm in adopted_vms or [] if vm["upstream"] == name])
        self.cycle.start()
        self.observability.start()
        # What exists now (modules, config, pools) lives as long as the worker: keep the cyclic
        # collector from walking it again on every full collection.
        gc.freeze()
        self.channel.send({"type": "ready", "worker": self.worker_id, "pid": os.getpid()})
        listener = self.loop.create_task(self._listen_to_master())
        await self.stopped.wait()
        listener.cancel()
        if self.graceful:
            await self._drain()
        self.observability.stop()  # last metrics flush, access log written out

    async def _listen_to_master(self) -> None:
        while True:
            message = await self.channel.receive()
            if message is None:
                log.warning("worker %d: master is gone, stopping gracefully", self.worker_id)
                self.quit()
                return
            kind = message.get("type")
            if kind == "quit":
                self.quit()
            elif kind == "vm_booted" and (pool := self.vm_pools.get(message["vm"]["upstream"])):
                pool.booted(message["vm"])
            elif kind == "vm_boot_failed" and (pool := self.vm_pools.get(message["upstream"])):
                pool.boot_failed(message["reason"])
            elif kind == "vm_exited" and (pool := self.vm_pools.get(message["upstream"])):
                pool.exited(message["vm"])

    def quit(self) -> None:
        log.info("worker %d: graceful stop, %d connections open", self.worker_id, self.state.clients)
        self.graceful = True
        self.cycle.stop()
        self.state.begin_drain()
        for pool in self.vm_pools.values():
            pool.stop()
        for check in self.health_checks:
            check.stop()
        self.stopped.set()

    def terminate(self) -> None:
        self.graceful = False
        self.cycle.stop()
        self.stopped.set()

    async def _drain(self) -> None:
        deadline = self.loop.time() + self.config.worker_shutdown_timeout
        while self.state.clients > 0 and self.loop.time() < deadline and self.graceful:
            await asyncio.sleep(0.05)
        if self.state.clients:
            log.warning("worker %d: %d connections still open at worker_shutdown_timeout",
                        self.worker_id, self.state.clients)


def main() -> None:
    control_fd = int(os.environ["UKPROXY_CONTROL_FD"])
    sock = socket.socket(fileno=control_fd)
    # A QUIT that comes while the worker is still starting (a reload right after a respawn) must not
    # kill it with the default action: remembered, and honoured once the loop runs.
    early_quit: list[int] = []
    signal.signal(signal.SIGQUIT, lambda signum, frame: early_quit.append(signum))
    init, rest = control.read_blocking(sock)
    config = loads(init["config_text"], init["config_path"])
    worker_id: int = init["worker"]
    setup_logging(config.log, f"worker {worker_id}")
    sockets = [socket.socket(fileno=fd) for fd in init["listen_fds"]]
    for s in sockets:
        s.setblocking(False)
    if init.get("netns"):
        # Listening sockets stay in the host namespace; every socket made from here on (upstreams)
        # lives in the backend namespace, so the VMs are reachable only through the proxy.
        from bridge import enter_netns

        enter_netns(init["netns"])
    try:
        raise_nofile_limit(init.get("nofile") or 0)
    except PrivilegeError as e:
        log.critical("%s", e)
        sys.exit(EXIT_CONFIG)

    async def start() -> None:
        channel = await control.ControlChannel.open(sock, rest)
        worker = Worker(config, worker_id, sockets, channel, init.get("lock_path"))
        if init.get("identity"):
            # Last: the sockets, the namespace and every import are in place.
            preload_late_imports()
            drop_privileges(Identity(**init["identity"]))
        if early_quit:
            worker.loop.call_soon(worker.quit)
        await worker.run(init.get("vms"))

    try:
        uvloop.run(start())
    except Exception:
        log.exception("worker %d failed", worker_id)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
