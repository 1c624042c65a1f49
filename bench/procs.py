"""Every process and namespace the bench starts, stopped at the end: also on error, ^C or SIGTERM.

`Processes.start()` registers a child; `stop_all()` (called from a finally and from atexit) stops them
newest first, each with its whole process tree, then deletes the namespaces the bench created.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import psutil

T = TypeVar("T")


def free_port() -> int:
    """A loopback port free now, chosen below the kernel's ephemeral range: a port picked by bind(0)
    comes from that range, and an outgoing connection could take it before our server binds it."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def on_free_ports(n: int, start: Callable[[list[int]], T], attempts: int = 4) -> T:
    """`start(ports)` on `n` ports that were free a moment ago. Another process may bind one first
    (the start fails with "Address already in use"): then again, on fresh ports."""
    for attempt in range(attempts):
        try:
            return start([free_port() for _ in range(n)])
        except RuntimeError as e:
            if "Address already in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_bound(port: int, host: str = "127.0.0.1", timeout: float = 20.0, proc: Started | None = None) -> None:
    """Wait until something has bound host:port, by trying to bind it (no probe connection)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before listening:\n{proc.tail()}")
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound {host}:{port} after {timeout}s" + (f":\n{proc.tail()}" if proc else ""))


def wait_for(probe: Callable[[], bool], what: str, timeout: float,
             proc: subprocess.Popen[bytes] | None = None) -> float:
    """Seconds until probe() held; RuntimeError past the bound, or as soon as `proc` (the process that
    should make it hold) has exited."""
    start = time.monotonic()
    while not probe():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {what}")
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a server the bench started by itself (not through Processes) and wait for it."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout)


class Started:
    """One child process whose output goes to a log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes],
                 stop_signal: int) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self._log_file = log_file
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def stop(self, timeout: float = 20.0) -> None:
        family: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            family = psutil.Process(self.pid).children(recursive=True)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for p in family:  # anything the child left behind (workers, QEMU)
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self._log_file.close()


class Processes:
    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir.resolve()
        self.started: list[Started] = []
        self.namespaces: list[str] = []
        atexit.register(self.stop_all)

    def start(self, name: str, argv: list[str], cwd: Path | None = None, stop_signal: int = signal.SIGTERM,
              env: dict[str, str] | None = None) -> Started:
        log_path = self.raw_dir / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Started.stop()
        popen = subprocess.Popen(argv, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
        started = Started(name, popen, log_path, log_file, stop_signal)
        self.started.append(started)
        return started

    def stop(self, started: Started) -> None:
        started.stop()
        if started in self.started:
            self.started.remove(started)

    def new_netns_name(self) -> str:
        """A unique name for a namespace ukproxy will create; deleted by stop_all() if it is left behind."""
        name = f"ukb-{secrets.token_hex(4)}"
        self.namespaces.append(name)
        return name

    def stop_all(self) -> None:
        while self.started:
            self.stop(self.started[-1])
        for ns in self.namespaces:
            if os.path.exists(f"/run/netns/{ns}"):
                for pid in _pids_in_netns(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        self.namespaces.clear()


def _pids_in_netns(ns: str) -> list[int]:
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP become KeyboardInterrupt, so finally blocks run and children are stopped."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
