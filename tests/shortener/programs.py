"""The link shortener's processes for tests: the one-process original, and kv/api unikernels on QEMU's
user networking (loopback ports only: the VMs reach each other through the host's loopback, 10.0.2.2)."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from bench.unikernel_harness import QEMU, UNIKERNELS
from tests.running import free_port
from tests.waiting import wait_until

REPO = UNIKERNELS.parent
SITE = REPO / "apps" / "shortener" / "site"
ORIGINAL = UNIKERNELS / "build" / "host" / "shortener-original"


def build() -> None:
    done = subprocess.run(["make", "-C", str(UNIKERNELS), "--no-print-directory"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"make -C unikernels failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> object:
        return json.loads(self.body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


_opener = urllib.request.build_opener(NoRedirect)


class Program:
    """A process serving HTTP on a loopback port."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port = argv, port
        self.proc: subprocess.Popen[str] | None = None

    def launch(self) -> Program:
        """Starts the process without waiting for it (kv speaks no HTTP)."""
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def start(self, timeout: float = 60) -> Program:
        self.launch()
        wait_until(lambda: self.alive_status("/health"), f"{self.argv[0]} answers on port {self.port}",
                   timeout=timeout)
        return self

    def alive_status(self, path: str) -> int:
        try:
            return self.request("GET", path, timeout=2).status
        except OSError:
            return 0

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                timeout: float = 20) -> Answer:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with _opener.open(req, timeout=timeout) as r:
                return Answer(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, dict(e.headers), e.read())

    def create(self, url: str) -> Answer:
        return self.request("POST", "/api/links", json.dumps({"url": url}).encode(), "application/json")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


def original(data: Path) -> Program:
    port = free_port()
    return Program([str(ORIGINAL), "--port", str(port), "--site", str(SITE), "--data", str(data)], port)


def vm_argv(image: str, append: str, forward: str, share: Path | None = None) -> list[str]:
    argv = [
        QEMU, "-accel", "tcg", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-m", "16",
        "-kernel", str(UNIKERNELS / "build" / image), "-append", f"ip=10.0.2.15/24 gw=10.0.2.2 {append}",
        "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", f"user,id=n0,hostfwd={forward}",
        "-device", "virtio-net-pci,netdev=n0,disable-modern=on,romfile=",
    ]
    if share is not None:
        argv += ["-fsdev", f"local,id=f0,path={share},security_model=none",
                 "-device", "virtio-9p-pci,fsdev=f0,mount_tag=share,disable-modern=on"]
    return argv
