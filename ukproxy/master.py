"""The master: listening sockets, workers, signals, reload. It never serves traffic.

Signals are taken by the event loop (queued, handled outside the handler, as Gunicorn's arbiter
does): TERM/INT fast stop, QUIT graceful stop, HUP reload, CHLD reap, USR1 reopen logs.
Workers are `python -m ukproxy.worker` processes (fork+exec: a fresh interpreter, so nothing of
the master's loop, threads or locks leaks into them). They are reaped by the ChildReaper, respawned
with a backoff, and a crash loop at start-up stops the master with a clear error. A worker whose
heartbeat is later than `worker_heartbeat_timeout` is hung (its loop no longer turns, yet it keeps
its reuseport share of new connections): it is killed and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ukproxy import compiled, control, metrics
from ukproxy.cluster import startup as cluster_startup
from ukproxy.cluster.node import ClusterNode
from ukproxy.cluster.startup import Shared
from ukproxy.config import Config, ConfigError, load, usable_cpus
from ukproxy.listeners import ListeningSockets
from ukproxy.logs import setup_logging
from ukproxy.metrics.master_side import MasterObservability
from ukproxy.pidfile import PidFile
from ukproxy.privileges import Identity, PrivilegeError, needed_nofile, worker_identity
from ukproxy.protocol import (
    EXIT_CONFIG,
    Heartbeat,
    Init,
    Message,
    Ready,
    TicketKeys,
    VmBoot,
    VmBooted,
    VmBootFailed,
    VmExited,
    VmStop,
    describe_exit,
)
from ukproxy.reaper import ChildReaper
from ukproxy.tls.check import expiry_warnings
from ukproxy.tls.tickets import TicketKeyRotation, rotation_period
from ukproxy.vm.fleet import Fleet, FleetConfigError, FleetVm
from ukproxy.worker_start import cpu_ticks, signals_held

log = logging.getLogger("ukproxy.master")

TASKSET = shutil.which("taskset")  # util-linux, essential on Debian
NEW_WORKERS_READY_TIMEOUT = 15.0  # at a reload, how long old workers keep accepting for slow new ones
CRASH_WINDOW = 2.0  # a worker dying sooner than this after start counts towards a crash loop
CRASH_LOOP_LIMIT = 5  # that many quick deaths in a row, before any worker became ready, stop the master
BACKOFF_MAX = 5.0
HEARTBEAT_INTERVAL_MAX = 1.0  # workers beat this often, or 4 times per timeout if that is shorter
START_GRACE = 15.0  # a worker not heard from yet may go this long without using CPU (worker_start.py)
START_LIMIT = 120.0  # and this long in all: a start that spins without end is hung too


@dataclass
class WorkerProcess:
    slot: int
    generation: int
    proc: subprocess.Popen[bytes]
    channel: control.ControlChannel
    cpu: int | None
    started_at: float = field(default_factory=time.monotonic)
    heard_at: float | None = None  # monotonic time of its last message (every message is a heartbeat)
    cpu_ticks: int | None = None  # before its first message: its CPU time when last looked at
    progressed_at: float | None = None  # and when that last grew (a busy start is slow, not hung)
    ready: bool = False
    quitting: bool = False
    hung: bool = False  # killed for a late heartbeat

    @property
    def pid(self) -> int:
        return self.proc.pid


def run_dir_for(pid_file: str) -> str:
    """The master's scratch directory (accept lock, metrics files, QMP sockets): named after the pid file,
    so a master restarted after a SIGKILL finds and wipes what its predecessor left; short, because
    unix socket paths are limited to 107 bytes."""
    digest = hashlib.sha256(os.path.abspath(pid_file).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"ukproxy-{digest}")


class Master:
    def __init__(self, config: Config, pid_file: PidFile):
        self.config = config
        self.generation = 0
        self.sockets = ListeningSockets()
        self.workers: dict[int, WorkerProcess] = {}  # pid → worker
        self.reaper = ChildReaper()
        self.run_dir = run_dir_for(config.pid_file)
        self.lock_path = os.path.join(self.run_dir, "accept.lock")
        self.pid_file = pid_file  # acquired by the caller before anything here touches the run directory
        self.stopping = False
        self.stopping_fast = False
        self.done = asyncio.Event()
        self.exit_code = 0
        self.quick_deaths = 0
        self.any_ready = False
        self.backoff = 0.1
        self.identity: Identity | None = None
        self.fleet = Fleet(config, self.reaper, self.run_dir)
        # How a reload reads the config: the file alone, or merged with the cluster's shared part.
        self.load_config: Callable[[str], Config] = load
        self.cluster: ClusterNode | None = None
        self.joined: Shared | None = None  # the shared config it started with
        # One reload at a time: a SIGHUP and a cluster apply that overlapped would each spawn workers and
        # retire the other's, and the one that read its config first could finish last (docs/cluster.md).
        self.reloading = asyncio.Lock()
        self.fleet.on_vm_exit = self._vm_died
        # TLS session ticket keys: made here, shared by every worker, rotated (tls/tickets.py).
        self.ticket_keys = TicketKeyRotation(
            lambda: rotation_period([lc.tls.session_timeout for lc in self.config.listen if lc.tls is not None]),
            self._tell_ticket_keys)
        # Metrics directory and PROMETHEUS_MULTIPROC_DIR, before any child starts; /metrics + /status.
        self.observability = MasterObservability(
            self.run_dir, lambda: self.workers.values(), lambda: self.generation, self._server_exists)
        self.observability.add_status_provider("vms", self.fleet.status_rows)

    # start and stop

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        # Only one master per pid file runs (acquire checked), so anything here is a predecessor's
        # (the metrics directory was already wiped and prepared by the observability set-up).
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        for entry in os.listdir(self.run_dir):
            if entry != "metrics":
                path = os.path.join(self.run_dir, entry)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        log.info("run directory %s", self.run_dir)
        try:
            self.sockets.open(self.config)
            for sig, handler in (
                (signal.SIGTERM, lambda: self.stop(graceful=False, why="SIGTERM")),
                (signal.SIGINT, lambda: self.stop(graceful=False, why="SIGINT")),
                (signal.SIGQUIT, lambda: self.stop(graceful=True, why="SIGQUIT")),
                (signal.SIGHUP, lambda: self.loop.create_task(self.reload())),
                (signal.SIGUSR1, self.reopen_logs),
            ):
                self.loop.add_signal_handler(sig, handler)
            self.reaper.install(self.loop)
            await self.observability.start(self.config)
            try:
                self.identity = worker_identity(self.config)
            except PrivilegeError as e:
                log.critical("%s", e)
                return 1
            self._prepare_files_for_workers()
            # QEMU drops to the workers' user once it has opened its TAP and files (-runas).
            self.fleet.vm_user = self.identity.user if self.identity else None
            try:
                await self.fleet.start()
                # Service addresses live in the backend network, which exists only now.
                self.sockets.open(self.config, self.fleet.netns)
            except Exception as e:
                log.critical("cannot set up the VM fleet: %s", e)
                await self.fleet.shutdown()
                return 1
            for slot in range(self.config.workers):
                await self.spawn(slot)
            self.loop.create_task(self._watch_heartbeats())
            self.ticket_keys.start(self.loop)
            if self.config.cluster is not None:
                self.cluster = ClusterNode(self, self.config.cluster, self.joined)
                self.cluster.start()
            log.info("master %d: %d workers, listening on %s", os.getpid(), self.config.workers,
                     ", ".join(lc.address for lc in self.config.listen))
            _warn_of_expiring_certificates(self.config)
            # The workers import what the master did: same sources, same decision (ukproxy.compiled).
            if compiled.MODE.startswith("compiled"):
                log.info("request path: %s", compiled.MODE)
            else:
                log.warning("request path: %s, about half as fast", compiled.MODE)
            await self.done.wait()
        finally:
            if self.cluster is not None:
                await self.cluster.stop()  # its record leaves at once rather than after the lease TTL
            self.sockets.close()
            await self.fleet.shutdown()
            await self.observability.stop()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.exit_code

    def stop(self, graceful: bool, exit_code: int = 0, why: str = "") -> None:
        # A second graceful stop changes nothing; a fast stop may cut a graceful one short, once.
        if self.stopping and (graceful or self.stopping_fast):
            return
        self.stopping = True
        self.stopping_fast = not graceful
        self.ticket_keys.stop()
        if self.cluster is not None:
            self.cluster.draining()
        self.exit_code = exit_code or self.exit_code
        log.info("master: %s stop%s", "graceful" if graceful else "fast", f" ({why})" if why else "")
        sig = signal.SIGQUIT if graceful else signal.SIGTERM
        for w in self.workers.values():
            w.quitting = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, sig)
        timeout = self.config.worker_shutdown_timeout + 2.0 if graceful else 3.0
        self.loop.create_task(self._finish_stop(timeout))

    async def _finish_stop(self, timeout: float) -> None:
        deadline = self.loop.time() + timeout
        while self.workers and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
            self.reaper.reap()
        for w in list(self.workers.values()):
            log.warning("worker %d (pid %d) did not stop in %.1fs: SIGKILL", w.slot, w.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        while self.workers:
            await asyncio.sleep(0.02)
            self.reaper.reap()
        self.done.set()

    # workers

    def _prepare_files_for_workers(self) -> None:
        """What unprivileged workers write to (the run directory with the accept lock and metrics files,
        the log files) must be theirs; made before they start, and again when logs are reopened."""
        open(self.lock_path, "a").close()
        if self.identity is None:
            return
        uid, gid = self.identity.uid, self.identity.gid
        for root, _dirs, files in os.walk(self.run_dir):
            for name in [root, *(os.path.join(root, f) for f in files)]:
                with contextlib.suppress(OSError):
                    os.chown(name, uid, gid)
        for path in (self.config.log.access_log, self.config.log.error_log):
            if path in ("off", "stderr"):
                continue
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            open(path, "a").close()
            with contextlib.suppress(OSError):
                os.chown(path, uid, gid)

    def cpu_for(self, slot: int) -> int | None:
        cpus = self.config.cpu_affinity
        return cpus[slot % len(cpus)] if cpus else None

    async def spawn(self, slot: int) -> WorkerProcess:
        config = self.config
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_socks = self.sockets.for_worker(config, slot)
        fds = [s.fileno() for s in listen_socks]
        env = dict(os.environ, UKPROXY_CONTROL_FD=str(child_end.fileno()),
                   UKPROXY_CPUS=",".join(map(str, usable_cpus())),  # it revalidates the config, pinned
                   UKPROXY_RUN_DIR=self.run_dir)  # where the limit zones' shared files live (edge/shared_zone.py)
        cpu = self.cpu_for(slot)
        # taskset pins before the interpreter runs a line, so no thread of the worker ever runs elsewhere.
        pin = ["taskset", "-c", str(cpu)] if cpu is not None and TASKSET else []
        with signals_held():  # the worker starts with them blocked until its handlers exist (worker_start.py)
            proc = subprocess.Popen(
                [*pin, sys.executable, "-m", "ukproxy.worker"],
                pass_fds=[child_end.fileno(), *fds],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        child_end.close()
        if cpu is not None and not TASKSET:
            os.sched_setaffinity(proc.pid, {cpu})  # right after exec, before the worker starts a thread
        channel = await control.ControlChannel.open(parent_end)
        worker = WorkerProcess(slot, self.generation, proc, channel, cpu)
        self.workers[proc.pid] = worker
        self.reaper.watch(proc.pid, lambda status: self._worker_exited(worker, status))
        channel.send(Init(
            worker=slot,
            config_text=config.text,
            config_path=config.path,
            cpu=cpu,
            listen_fds=fds,
            lock_path=self.lock_path if config.accept_mutex and not config.reuseport else None,
            netns=self.fleet.netns,
            identity=self.identity,
            nofile=needed_nofile(config),
            heartbeat_interval=heartbeat_interval(config.worker_heartbeat_timeout),
            vms=[vm.describe() for vm in self.fleet.owned_by(slot)],
            ticket_keys=self.ticket_keys.ring.wire(),
        ))
        if self.cluster is not None:
            self.cluster.greet(channel)  # where to spill, before its first request
        self.loop.create_task(self._listen_to_worker(worker))
        log.info("worker %d started: pid %d%s", slot, proc.pid, f", CPU {cpu}" if cpu is not None else "")
        return worker

    def _tell_ticket_keys(self, keys: list[str]) -> None:
        for worker in self.workers.values():
            worker.channel.send(TicketKeys(keys))

    async def _listen_to_worker(self, worker: WorkerProcess) -> None:
        while True:
            message = await worker.channel.receive()
            if message is None:
                return
            worker.heard_at = time.monotonic()
            if isinstance(message, Heartbeat):
                continue
            if isinstance(message, Ready):
                log.info("worker %d ready: pid %d", worker.slot, worker.pid)  # serving (tests wait for this line)
                worker.ready = True
                self.any_ready = True
                self.quick_deaths = 0
            elif isinstance(message, VmBoot):
                self.loop.create_task(self._boot_for(worker, message.upstream))
            elif isinstance(message, VmStop):
                self.loop.create_task(self._stop_for(worker, message.vm))
            else:
                log.error("worker %d (pid %d): unexpected control message %s", worker.slot, worker.pid, message.TYPE)

    async def _watch_heartbeats(self) -> None:
        """Kill workers whose heartbeat is late; the reaper then respawns them. A tick that comes late
        itself means the master's loop stalled, and the workers' heartbeats wait unread in their
        channels: that round judges nobody."""
        last_tick = time.monotonic()
        while not self.stopping:
            timeout = self.config.worker_heartbeat_timeout
            interval = heartbeat_interval(timeout)
            await asyncio.sleep(interval)
            now = time.monotonic()
            stalled, last_tick = now - last_tick > interval * 2 + 1.0, now
            if timeout <= 0 or stalled:
                for w in self.workers.values():
                    w.heard_at = now if w.heard_at is not None else None
                    w.progressed_at = now if w.heard_at is None else None
                continue
            for w in list(self.workers.values()):
                if w.heard_at is None:
                    note_start_progress(w, now)
                if not w.hung and (silent := silence(w, now)) is not None \
                        and silent > (timeout if w.heard_at is not None else max(timeout, START_GRACE)):
                    self._kill_hung(w, silent)
                elif not w.hung and w.heard_at is None and now - w.started_at > max(timeout, START_LIMIT):
                    self._kill_hung(w, now - w.started_at)

    def _kill_hung(self, worker: WorkerProcess, silent: float) -> None:
        worker.hung = True
        log.error("worker %d (pid %d) hung: no heartbeat for %.1fs (worker_heartbeat_timeout %.1fs); SIGKILL",
                  worker.slot, worker.pid, silent, self.config.worker_heartbeat_timeout)
        metrics.worker_hung(worker.slot)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    # VMs, on behalf of workers

    async def _boot_for(self, worker: WorkerProcess, upstream: str) -> None:
        try:
            vm = await self.fleet.boot(upstream, worker.slot, worker.cpu)
        except Exception as e:  # every failure is an answer to the worker, never a dead master
            log.error("VM boot for worker %d, upstream %s failed: %s", worker.slot, upstream, e)
            self._tell_slot(worker, VmBootFailed(upstream, str(e)))
            return
        self._tell_slot(worker, VmBooted(vm.describe()))

    async def _stop_for(self, worker: WorkerProcess, vm_id: str) -> None:
        vm = self.fleet.vms.get(vm_id)
        if vm is None:
            return
        await self.fleet.stop(vm_id)
        self._tell_slot(worker, VmExited(vm_id, vm.upstream))

    def _vm_died(self, vm: FleetVm, status: int) -> None:
        for w in self.workers.values():
            if w.slot == vm.slot and not w.quitting:
                w.channel.send(VmExited(vm.vm_id, vm.upstream))

    def _server_exists(self, upstream: str, server: str) -> bool:
        """Whether a per-server metric series still stands for something: a static server of a configured
        upstream, or a VM still in the fleet. A gone VM's series leave /metrics (ids are never reused)."""
        if server in self.fleet.vms:
            return True
        return any(u.name == upstream and u.vm is None for u in self.config.upstreams)

    def _tell_slot(self, asked: WorkerProcess, message: Message) -> None:
        """Answer the worker that asked, or its successor in the slot if it died meanwhile."""
        target = asked
        if asked.pid not in self.workers or asked.quitting:
            target = next((w for w in self.workers.values() if w.slot == asked.slot and not w.quitting), asked)
        target.channel.send(message)

    def _worker_exited(self, worker: WorkerProcess, status: int) -> None:
        self.workers.pop(worker.pid, None)
        worker.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by us, not by Popen
        worker.channel.close()
        self.observability.worker_exited(worker.pid)  # its live gauges leave the sums
        how = describe_exit(status)
        if worker.quitting or self.stopping:
            log.info("worker %d (pid %d) %s", worker.slot, worker.pid, how)
            if not self.stopping and not any(w.generation < self.generation for w in self.workers.values()):
                self.loop.create_task(self.fleet.stop_retired())  # the last old worker has drained
            return
        log.error("worker %d (pid %d) died: %s", worker.slot, worker.pid, how)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_CONFIG:
            log.error("worker %d cannot run this config; stopping", worker.slot)
            self.stop(graceful=False, exit_code=1)
            return
        lived = time.monotonic() - worker.started_at
        if lived < CRASH_WINDOW and not worker.ready:
            self.quick_deaths += 1
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        else:
            self.quick_deaths = 0
            self.backoff = 0.1
        if self.quick_deaths >= CRASH_LOOP_LIMIT and not self.any_ready:
            log.critical("workers crash at start-up (%d in a row): giving up", self.quick_deaths)
            self.stop(graceful=False, exit_code=1)
            return
        self.observability.worker_restarted(worker.slot)
        delay = self.backoff if self.quick_deaths else 0.0
        self.loop.call_later(delay, lambda: self.loop.create_task(self._respawn(worker)))

    async def _respawn(self, dead: WorkerProcess) -> None:
        if self.stopping or dead.generation != self.generation:
            return
        await self.spawn(dead.slot)

    # reload and logs

    async def reload(self, loader: Callable[[str], Config] | None = None) -> str | None:
        """Validate the config again; if good, start new workers with it and let the old ones drain.
        `loader` reads it (default: self.load_config). Returns why it was refused, or None.
        Reloads queue behind one another; each reads its config only once its turn has come."""
        async with self.reloading:
            if self.stopping:
                return "the master is stopping"
            return await self._reload(loader)

    async def _reload(self, loader: Callable[[str], Config] | None) -> str | None:
        try:
            new = (loader or self.load_config)(self.config.path)
        except (ConfigError, OSError) as e:
            log.error("reload refused, keeping the running config:\n%s", e)
            self.pid_file.write_status("reload-failed")
            return str(e)
        try:
            self.fleet.check_reconfigure(new)
            self.sockets.open(new, self.fleet.netns)
        except (OSError, FleetConfigError) as e:
            log.error("reload refused, keeping the running config: %s", e)
            self.pid_file.write_status("reload-failed")
            return str(e)
        old = [w for w in self.workers.values()]
        retiring = await self.fleet.reconfigure(new)
        if retiring:
            log.info("reload: VMs %s retire once the old workers have drained", ", ".join(retiring))
        self.config = new
        self.generation += 1
        setup_logging(new.log, "master")
        await self.observability.reconfigure(new)
        fresh = [await self.spawn(slot) for slot in range(new.workers)]
        # The old workers accept until the new ones do: a Python worker takes a moment to start (seconds
        # on a loaded machine), and connections must not wait in the backlog meanwhile.
        deadline = self.loop.time() + NEW_WORKERS_READY_TIMEOUT
        while not all(w.ready or w.pid not in self.workers for w in fresh) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        if not all(w.ready for w in fresh):
            log.warning("reload: not every new worker was ready after %.0fs; retiring the old ones anyway",
                        NEW_WORKERS_READY_TIMEOUT)
        for w in old:
            w.quitting = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGQUIT)
        self.pid_file.write_status("reloaded")
        log.info("reloaded: generation %d, %d new workers, %d old draining", self.generation, new.workers, len(old))
        _warn_of_expiring_certificates(new)
        return None

    def reopen_logs(self) -> None:
        setup_logging(self.config.log, "master")
        self._prepare_files_for_workers()
        for w in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGUSR1)


def _warn_of_expiring_certificates(config: Config) -> None:
    """As `ukproxy check` does: a TLS certificate that expires within 14 days (tls/check.py)."""
    for warning in expiry_warnings(config):
        log.warning("%s", warning)


def silence(worker: WorkerProcess, now: float) -> float | None:
    """How long `worker` has been silent as far as the master can know, or None if it has spoken since the
    master last read its channel. This timer wakes the master before its loop reads the sockets, so after
    any lateness of the master's own (load, a slow step) heartbeats may wait unread in the channel, or be
    read but not yet parsed: neither makes the worker late (docs/architecture.md, "Supervision")."""
    if worker.channel.unread():
        return None
    heard = [t for t in (worker.heard_at, worker.channel.arrived_at, worker.progressed_at) if t is not None]
    return now - max(heard, default=worker.started_at)


def note_start_progress(worker: WorkerProcess, now: float) -> None:
    """A worker not heard from yet that used CPU since the last look is starting, slowly: its silence
    counts from now (worker_start.py)."""
    ticks = cpu_ticks(worker.pid)
    if ticks is not None and worker.cpu_ticks is not None and ticks > worker.cpu_ticks:
        worker.progressed_at = now
    worker.cpu_ticks = ticks


def heartbeat_interval(timeout: float) -> float:
    """How often workers beat: four beats per timeout, at most one a second."""
    return HEARTBEAT_INTERVAL_MAX if timeout <= 0 else min(HEARTBEAT_INTERVAL_MAX, timeout / 4)


MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


def _forked_child_forgets_master_signals() -> None:
    """Libraries fork helpers from the master (pyroute2 does, for namespaces). Such a child shares the
    event loop's signal wakeup fd: a SIGTERM sent to the helper would reach the master's loop as its
    own SIGTERM. The child drops the wakeup fd and gets default dispositions back."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in MASTER_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)


def run_master(config: Config) -> int:
    # The master runs asyncio's own loop, not uvloop: it needs SIGCHLD for itself (uvloop keeps that
    # signal for its subprocess support) and it is off the data path.
    setup_logging(config.log, "master")
    os.register_at_fork(after_in_child=_forked_child_forgets_master_signals)
    pid_file = PidFile(config.pid_file)
    pid_file.acquire()  # first: a second master must not touch the running one's files
    try:
        joined = None
        if config.cluster is not None:
            config, joined = cluster_startup.join(config)  # the first workers run the shared config already
        master = Master(config, pid_file)
        master.joined = joined
        return asyncio.run(master.run())
    finally:
        pid_file.release()
