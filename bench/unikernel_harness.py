"""Boot the backend unikernel under QEMU (TCG) inside a throwaway network namespace.

Shared by tests/unikernel and bench/unikernel_boot.py. Everything it creates (namespace,
bridge, TAPs, QEMU processes) is removed by `close()`, also after failures: the namespace
is deleted last, which takes any TAP or bridge still inside it along.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNIKERNELS = REPO / "unikernels"
QEMU = "qemu-system-x86_64"


def image_for(service: str) -> Path:
    """The image of one service: `make -C unikernels` builds build/<service>.elf per services/<service>/."""
    return UNIKERNELS / "build" / f"{service}.elf"


IMAGE = image_for("httpd")


def build_image(*services: str) -> Path:
    """Runs `make -C unikernels` (only these services' images when named); raises RuntimeError with the
    build output on failure. Returns httpd's image."""
    names = services or ("httpd",)
    argv = ["make", "-C", str(UNIKERNELS)] + ([f"SERVICES={' '.join(services)}"] if services else [])
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0 or not all(image_for(s).exists() for s in names):
        raise RuntimeError(f"make -C unikernels failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return IMAGE


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Netns:
    """A network namespace `PREFIX<random>` (default `ukt-`) holding bridge br0 with GATEWAY as its address."""

    def __init__(self, subnet: int | None = None, prefix: str = "ukt-") -> None:
        self.name = f"{prefix}{secrets.token_hex(4)}"
        self.subnet = subnet if subnet is not None else 100 + secrets.randbelow(150)
        self.gateway = f"10.77.{self.subnet}.1"
        self._taps = 0
        _ip("netns", "add", self.name)
        try:
            self.exec_ok("ip", "link", "set", "lo", "up")
            self.exec_ok("ip", "link", "add", "br0", "type", "bridge")
            # No STP or forwarding delay: a new TAP forwards at once.
            self.exec_ok("ip", "link", "set", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
            self.exec_ok("ip", "addr", "add", f"{self.gateway}/24", "dev", "br0")
            self.exec_ok("ip", "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def address(self, host: int) -> str:
        return f"10.77.{self.subnet}.{host}"

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def exec_ok(self, *args: str) -> None:
        subprocess.run(self.cmd(*args), check=True, capture_output=True)

    def run(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, **kw)

    def add_tap(self) -> str:
        tap = f"tap{self._taps}"
        self._taps += 1
        self.exec_ok("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        self.exec_ok("ip", "link", "set", tap, "master", "br0")
        self.exec_ok("ip", "link", "set", tap, "up")
        return tap

    def python(self, script: str, *args: str, timeout: float = 120) -> dict:
        """Runs `python -c script args` inside the namespace; its stdout is one JSON document."""
        proc = self.run(str(REPO / ".venv/bin/python"), "-c", script, *args, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return json.loads(proc.stdout)

    def close(self) -> None:
        _ip("netns", "delete", self.name, check=False)


@dataclass
class Vm:
    """One QEMU process running the unikernel. The serial console is read line by line."""

    argv: list[str]
    workdir: Path
    name: str
    ip: str | None = None
    mac: str | None = None
    port: int = 80
    qmp_path: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def start(self) -> Vm:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith("ready") and self.ready_at is None:
                self.ready_at = time.monotonic()
                self._ready.set()
            self.lines.append(line)
        self._ready.set()   # EOF: QEMU is gone, stop waiting

    def wait_ready(self, timeout: float = 30) -> str:
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise RuntimeError(f"VM {self.name} not ready after {timeout}s; console:\n" + self.output())
        return next(line for line in self.lines if line.startswith("ready"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc
        rc = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return rc

    def qmp(self, *commands: str, timeout: float = 10) -> list[dict]:
        """Sends qmp_capabilities then each command; returns the replies."""
        assert self.qmp_path
        deadline = time.monotonic() + timeout
        while not self.qmp_path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("QMP socket never appeared")
            time.sleep(0.01)
        replies = []
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())   # greeting
            for cmd in ("qmp_capabilities", *commands):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    msg = json.loads(f.readline())
                    if "return" in msg or "error" in msg:
                        replies.append(msg)
                        break
        return replies

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


def qemu_argv(
    *,
    append: str,
    netdev: str,
    mac: str | None = None,
    memory: str = "16",
    qmp_path: Path | None = None,
    image: Path = IMAGE,
) -> list[str]:
    argv = [
        QEMU, "-accel", "tcg", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-m", memory, "-kernel", str(image), "-append", append, "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", netdev,
        "-device", "virtio-net-pci,netdev=n0,disable-modern=on,romfile=" + (f",mac={mac}" if mac else ""),
    ]
    if qmp_path:
        argv += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
    return argv


class Lab:
    """A namespace plus the VMs booted in it; `close()` kills every VM, then the namespace."""

    def __init__(self, workdir: Path, subnet: int | None = None, prefix: str = "ukt-") -> None:
        self.workdir = workdir
        self.netns = Netns(subnet, prefix)
        self.vms: list[Vm] = []
        self._next_host = 10

    def boot(
        self,
        name: str,
        service: str = "httpd",
        port: int = 80,
        memory: str = "16",
        extra: str = "",
        wait: bool = True,
    ) -> Vm:
        host = self._next_host
        self._next_host += 1
        ip = self.netns.address(host)
        tap = self.netns.add_tap()
        qmp = self.workdir / f"{name}.qmp"
        mac = f"52:54:00:77:{self.netns.subnet:02x}:{host:02x}"
        append = f"ip={ip}/24 gw={self.netns.gateway} port={port} name={name} service={service} {extra}".strip()
        argv = self.netns.cmd(*qemu_argv(
            append=append,
            netdev=f"tap,id=n0,ifname={tap},script=no,downscript=no",
            mac=mac,
            memory=memory,
            qmp_path=qmp,
            image=image_for(service),
        ))
        vm = Vm(argv=argv, workdir=self.workdir, name=name, ip=ip, mac=mac, port=port, qmp_path=qmp)
        self.vms.append(vm)
        vm.start()
        if wait:
            vm.wait_ready()
        return vm

    def close(self) -> None:
        for vm in self.vms:
            vm.stop()
        self.netns.close()


def is_root() -> bool:
    return os.geteuid() == 0
