"""One worker process: a uvloop event loop, its listeners, its accept cycle and its upstreams.

Started by the master as `python -m ukproxy.worker` with the listening sockets and one end of the
control channel passed as file descriptors; the first control message carries the validated config.
Signals: QUIT stops accepting and lets open connections finish (bounded by
`worker_shutdown_timeout`); TERM and INT stop at once. A closed control channel (the master is
gone) is taken as QUIT. A heartbeat goes to the master every `heartbeat_interval` from the event loop
itself: a worker whose loop is wedged sends none, and the master replaces it.
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
from dataclasses import replace

import uvloop

from ukproxy import control
from ukproxy.accept import AcceptMutex
from ukproxy.accept_cycle import AcceptCycle, Listener
from ukproxy.config import Config, ListenConfig, UpstreamConfig, loads
from ukproxy.edge.proxy_protocol import gate_factory
from ukproxy.edge.tcp_guard import TcpGuard
from ukproxy.logs import setup_logging
from ukproxy.metrics.worker_side import WorkerObservability
from ukproxy.privileges import PrivilegeError, drop_privileges, preload_late_imports, raise_nofile_limit
from ukproxy.protocol import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    Heartbeat,
    Message,
    Peers,
    Ready,
    TicketKeys,
    VmBooted,
    VmBootFailed,
    VmExited,
    VmInfo,
)
from ukproxy.proxy.tcp import tcp_protocol_factory
from ukproxy.proxy.tcp_native import NativeListener, TcpRelay
from ukproxy.tls.native import NativeTlsListener
from ukproxy.tls.tickets import SharedTicketKeys, TicketKey, keys_from_wire
from ukproxy.upstream.group import UpstreamGroup
from ukproxy.upstream.health import HealthCheck, check_servers
from ukproxy.upstream.host_servers import host_side, outside
from ukproxy.upstream.peers import HostSockets, PeerSet
from ukproxy.upstream.vm_pool import VmPool
from ukproxy.worker_start import hold_for_tests, unblock_in_worker
from ukproxy.worker_state import WorkerState

log = logging.getLogger("ukproxy.worker")


class Worker:
    def __init__(self, config: Config, worker_id: int, sockets: list[socket.socket],
                 channel: control.ControlChannel, lock_path: str | None, heartbeat_interval: float = 1.0,
                 host_sockets: HostSockets | None = None, ticket_keys: list[str] | None = None):
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
                if config.cluster is not None:  # a full pool spills to peer nodes (docs/cluster.md)
                    group.peers = PeerSet(config.cluster.node_id, host_sockets)
            elif host_sockets is not None and host_servers(config, u):  # across the backend namespace
                self.groups[u.name].make_socket = host_side(host_sockets, config.network.subnet)
        # TLS session ticket keys, the master's, shared by every worker (tls/tickets.py); our own without a master.
        self.tickets: SharedTicketKeys | None = None
        if any(lc.tls is not None for lc in config.listen):
            self.tickets = SharedTicketKeys(keys_from_wire(ticket_keys or []) or [TicketKey.new()])
        self.tcp_relay: TcpRelay | None = None  # the C relay, made for the first tcp listener it can serve
        self.tcp_guards: dict[str, TcpGuard | None] = {}  # by listener: one for whichever relay serves it
        self.listeners = [
            Listener(sock, factory, lc.address, lc.backlog, self._native_tcp(lc) or self._native_tls(factory))
            for lc, sock in zip(config.listen, sockets, strict=True)
            for factory in (self._protocol_factory(lc),)
        ]
        mutex = AcceptMutex(lock_path) if lock_path else None
        self.cycle = AcceptCycle(self.state, self.listeners, mutex, config.accept_mutex_delay, config.multi_accept)
        # metrics (with each upstream server's figures), access log
        self.observability = WorkerObservability(config, worker_id, self.state, self.cycle, self.groups)
        self.stopped = asyncio.Event()
        self.graceful = False
        self.heartbeat_interval = heartbeat_interval
        self._heartbeat: asyncio.TimerHandle | None = None

    def _native_tcp(self, lc: ListenConfig) -> NativeListener | None:
        """The C relay for a tcp listener, when built and the listener needs nothing only tcp.py has."""
        if lc.protocol != "tcp":
            return None
        if self.tcp_relay is None:
            self.tcp_relay = TcpRelay.load(self.state)
            if self.tcp_relay is None:
                return None
        return self.tcp_relay.listener(lc, self.groups[lc.upstream], self.config.multi_accept,  # type: ignore[index]
                                       self._tcp_guard(lc))

    def _tcp_guard(self, lc: ListenConfig) -> TcpGuard | None:
        """A tcp listener's allow/deny and limit_conn (edge/tcp_guard.py), or None without them."""
        if lc.address not in self.tcp_guards:
            self.tcp_guards[lc.address] = TcpGuard.from_config(self.config, lc)
        return self.tcp_guards[lc.address]

    @staticmethod
    def _native_tls(factory: Callable[[], asyncio.Protocol]) -> NativeTlsListener | None:
        """The C engine for a TLS listener (tls/native.py), when built; not under a PROXY header's gate."""
        native_side = getattr(factory, "native_side", None)
        return native_side() if native_side is not None else None

    def _protocol_factory(self, lc: ListenConfig) -> Callable[[], asyncio.Protocol]:
        if lc.proxy_protocol:  # every connection starts with a PROXY header, read first (edge/proxy_protocol.py)
            inner = self._protocol_factory(replace(lc, proxy_protocol=False))
            return gate_factory(inner, self.state, lc.proxy_protocol_timeout, lc.protocol == "http", lc.address)
        if lc.protocol == "tcp":
            return tcp_protocol_factory(self.state, self.groups[lc.upstream], lc.address,  # type: ignore[index]
                                        self._tcp_guard(lc))
        from ukproxy.proxy.http import http_protocol_factory

        factory = http_protocol_factory(self.state, self.config, lc, self.groups)
        if lc.tls is not None:  # the handshake first, then the http connection (tls/acceptor.py)
            from ukproxy.tls.acceptor import tls_protocol_factory

            # http2: ALPN offers h2 first; h2_select.VersionSelector reads the choice (docs/architecture.md, "HTTP/2")
            alpn = ("h2", "http/1.1") if lc.http2 else ()
            return tls_protocol_factory(self.state, lc, self.tickets, lambda alpn: factory(), alpn)
        return factory

    async def run(self, adopted_vms: list[VmInfo] | None = None) -> None:
        self.loop.add_signal_handler(signal.SIGQUIT, self.quit)
        self.loop.add_signal_handler(signal.SIGTERM, self.terminate)
        self.loop.add_signal_handler(signal.SIGINT, self.terminate)
        self.loop.add_signal_handler(signal.SIGUSR1, self.observability.reopen_logs)  # logrotate
        unblock_in_worker()  # a signal that came during start-up is delivered now, to these handlers
        if self.tickets is not None:  # a client's TLS error is counted, not logged with a traceback
            from ukproxy.tls.acceptor import quiet_handshake_errors

            quiet_handshake_errors(self.loop)
        for u in self.config.upstreams:  # a VM pool checks its own VMs; static servers are checked here
            if u.vm is None and u.health is not None:
                group = self.groups[u.name]
                self.health_checks += check_servers(group.servers, u.health, u.name, self.loop, group.make_socket)
        for name, pool in self.vm_pools.items():
            pool.start([vm for vm in adopted_vms or [] if vm.upstream == name])
        self.cycle.start()
        self.observability.start()
        # What exists now (modules, config, pools) lives as long as the worker: keep the cyclic
        # collector from walking it again on every full collection.
        gc.freeze()
        self.channel.send(Ready(self.worker_id, os.getpid()))
        self._beat()
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
            self._handle(message)

    def _handle(self, message: Message) -> None:
        if isinstance(message, VmBooted):
            if pool := self.vm_pools.get(message.vm.upstream):
                pool.booted(message.vm)
        elif isinstance(message, VmBootFailed):
            if pool := self.vm_pools.get(message.upstream):
                pool.boot_failed(message.reason)
        elif isinstance(message, VmExited):
            if pool := self.vm_pools.get(message.upstream):
                pool.exited(message.vm)
        elif isinstance(message, TicketKeys):
            if self.tickets is not None:
                self.tickets.update(keys_from_wire(message.keys))
        elif isinstance(message, Peers):
            for name, peers in message.upstreams.items():
                group = self.groups.get(name)
                if group is not None and group.peers is not None:
                    group.peers.update(peers)
        else:
            log.error("worker %d: unexpected control message %s", self.worker_id, message.TYPE)

    def _beat(self) -> None:
        """Tell the master the loop turns; on through a graceful drain (the worker is not hung then)."""
        self.channel.send(Heartbeat())
        self._heartbeat = self.loop.call_later(self.heartbeat_interval, self._beat)

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


def host_servers(config: Config, upstream: UpstreamConfig) -> bool:
    """Whether a static upstream has servers on the host's side of the backend network (upstream/host_servers.py)."""
    return upstream.vm is None and any(outside(config.network.subnet, s.host) for s in upstream.servers)


def main() -> None:
    # The master started us with the signals we handle blocked: one sent now (a reload or a stop right
    # after a respawn) waits for Worker.run's handlers instead of killing us (worker_start.py).
    hold_for_tests()
    control_fd = int(os.environ["UKPROXY_CONTROL_FD"])
    sock = socket.socket(fileno=control_fd)
    init, rest = control.read_init(sock)
    config = loads(init.config_text, init.config_path)
    worker_id = init.worker
    setup_logging(config.log, f"worker {worker_id}")
    sockets = [socket.socket(fileno=fd) for fd in init.listen_fds]
    for s in sockets:
        s.setblocking(False)
    # Before the namespace: its thread stays in the host namespace, where peer nodes are reachable.
    host_sockets = HostSockets() if init.netns and (config.cluster is not None or any(
        host_servers(config, u) for u in config.upstreams)) else None
    if init.netns:
        # Listening sockets stay in the host namespace; every socket made from here on (upstreams)
        # lives in the backend namespace, so the VMs are reachable only through the proxy.
        from bridge import enter_netns

        enter_netns(init.netns)
    try:
        raise_nofile_limit(init.nofile)
    except PrivilegeError as e:
        log.critical("%s", e)
        sys.exit(EXIT_CONFIG)

    async def start() -> None:
        channel = await control.ControlChannel.open(sock, rest)
        worker = Worker(config, worker_id, sockets, channel, init.lock_path, init.heartbeat_interval, host_sockets,
                        init.ticket_keys)
        if init.identity is not None:
            # Last: the sockets, the namespace and every import are in place.
            preload_late_imports()
            drop_privileges(init.identity)
        await worker.run(init.vms)

    try:
        uvloop.run(start())
    except Exception:
        log.exception("worker %d failed", worker_id)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
