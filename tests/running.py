"""Starting real ukproxy masters and small real backends for integration tests."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


def exchange(port: int, payload: bytes, chunk: int = 65536) -> bytes:
    """Send everything, half-close, and read until the proxy closes: both directions at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        received = bytearray()

        def reader() -> None:
            with contextlib.suppress(ConnectionResetError):
                while data := s.recv(chunk):
                    received.extend(data)

        t = threading.Thread(target=reader)
        t.start()
        # The proxy may close first (no upstream): then sending fails, and that is the answer.
        with contextlib.suppress(OSError):
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        t.join(30)
        return bytes(received)


# Ports come from the OS's randomness, not the random module's: Hypothesis (and any test) may seed that,
# and a seeded generator handed one fixture the same port twice. Never the same port twice per process,
# either: a port handed out is free until its server binds it, so a second call could find it free too.
_PORTS = random.SystemRandom()
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now, chosen below the kernel's ephemeral range: a port picked by bind(0)
    comes from that range, and an outgoing connection could take it before our server binds it."""
    low = _ephemeral_low()
    for _ in range(100):
        port = _PORTS.randrange(10_000, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def ukproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    """`ukproxy check -c config`, as an operator runs it: exit code, and every refusal on stderr."""
    return subprocess.run([sys.executable, "-m", "ukproxy", "check", "-c", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def wait_for_listening(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Wait until something has bound host:port, without connecting (a probe connection would
    reach the backends through the proxy and disturb what a test counts). A master's start-up
    (imports, config, workers) takes seconds on a busy 2-core machine: the bound is generous."""
    def bound() -> bool:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return True
            return False

    wait_until(bound, f"something to bind {host}:{port}", timeout=timeout)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    def answers() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    wait_until(answers, f"something to listen on {host}:{port}", timeout=timeout)


class RunningProxy:
    """A `ukproxy run` master started from a config text in a temporary directory."""

    def __init__(self, tmp: Path, config_text: str, name: str = "ukproxy", pid_name: str | None = None):
        self.dir = tmp
        self.config_path = tmp / f"{name}.toml"
        self.pid_file = tmp / f"{pid_name or name}.pid"  # a restart shares its predecessor's pid file
        self.log_path = tmp / f"{name}.log"
        header = f'pid_file = "{self.pid_file}"\n'
        self.config_path.write_text(header + config_text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ports: list[int] | None = None, expect_workers: int | None = None) -> RunningProxy:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ukproxy", "run", "-c", str(self.config_path)],
            cwd=REPO, stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            for port in wait_ports or []:
                try:
                    wait_for_listening(port)
                except AssertionError as e:
                    raise AssertionError(f"ukproxy did not listen on {port}: {e}\n{self.log()}") from None
            if expect_workers is not None:
                self.wait_workers(expect_workers)
        except BaseException:
            self.stop()  # a start that failed leaves no master behind, whoever the caller is (stop is idempotent)
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        workers = []
        for c in children:
            try:  # a worker that just exited is a zombie until the master reaps it: not a worker any more
                if c.status() != psutil.STATUS_ZOMBIE and "ukproxy.worker" in " ".join(c.cmdline()):
                    workers.append(c)
            except psutil.Error:
                continue
        return workers

    def wait_workers(self, n: int, timeout: float = 30.0, exclude: set[int] | None = None) -> list[psutil.Process]:
        return wait_until(lambda: [w for w in self.workers() if not exclude or w.pid not in exclude],
                          f"{n} workers" + (" of a new generation" if exclude else ""),
                          accept=lambda ws: len(ws) == n, timeout=timeout, context=self.log)

    def wait_ready(self, n: int, timeout: float = 60.0) -> list[psutil.Process]:
        """Wait until `n` workers run and each has told the master it is ready (the master logs it): a
        worker exists well before it accepts, seconds before on a busy machine, while imports run."""
        def ready() -> list[psutil.Process]:
            said = {int(pid) for pid in re.findall(r"worker \d+ ready: pid (\d+)", self.log())}
            return [w for w in self.workers() if w.pid in said]
        return wait_until(ready, f"{n} workers ready", accept=lambda ws: len(ws) == n, timeout=timeout,
                          context=self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ukproxy", *args, "-c", str(self.config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the master and make sure nothing it started survives."""
        if self.proc is None:
            return
        family = []
        with contextlib.suppress(psutil.NoSuchProcess):
            family = psutil.Process(self.pid).children(recursive=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.log_file.close()


class EchoServer:
    """A threaded TCP echo backend that also remembers how many connections it took."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port), backlog=512)
        self.connections = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@contextlib.contextmanager
def echo_servers(n: int) -> Iterator[list[EchoServer]]:
    servers = [EchoServer() for _ in range(n)]
    try:
        yield servers
    finally:
        for s in servers:
            s.close()
