"""Memory per VM and boot time, for each way of running QEMU: `python -m bench.vm_density [-n VMS]`.

`--images httpd,static,kv,api` picks the images (default httpd), `--variants microvm` the
configurations whose name contains a word, `--image-dir DIR` measures the images of another build.

Boots `n` VMs of an image at once per configuration (QEMU user networking, so no namespace is needed),
waits for each `ready` line and a first answer (HTTP 200, or +PONG from kv), lets them idle a second,
then reads every QEMU's memory: RSS (what `ps` shows; it counts the QEMU binary and libraries, shared by
all VMs, in full), PSS (the shared pages divided among the processes mapping them: what n VMs really cost, per VM) and
USS (private to the VM). VMs per GiB come from PSS.

Configurations: "before" is the command ukproxy used until this measurement (the default pc machine,
transparent huge pages on); "pc" and "microvm" are `ukproxy.vm.qemu.MACHINES` as ukproxy runs them
now (huge pages off); "ACPI on" is microvm as ukproxy ran it before acpi=off; "-m 8" halves the
guest RAM; "tb-size" caps TCG's translated-code buffer; "arena 1" runs QEMU with MALLOC_ARENA_MAX=1
(one malloc arena for all its threads).

Where a VM's private memory goes (smaps of one idle httpd VM on microvm, 16.5 MiB): QEMU's malloc
heap (~3.8 MiB), guest RAM that the guest wrote (~2.2 MiB: the image, lwIP's pools, rings), TCG's
translation-block hash table (2 MiB) and code buffer (~0.6 MiB), relocated library data and thread
stacks. Until the unikernel moved its big buffers out of .bss (unikernels/README.md, Memory), the
image's 5 MiB .bss counted twice more: QEMU's copy of the loaded image for reset, and its zeros
written into guest RAM. The QEMU binary and its libraries (about 21 MiB of RSS) are shared by every
VM: hence PSS, not RSS, for VMs per GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ukproxy.vm.qemu import VmSpec, _huge_pages_off, qemu_command

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "unikernels" / "build"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Image:
    name: str
    args: str  # the service's boot arguments
    probe: str  # "http": GET /health (or / for static) answers 200; "resp": PING answers +PONG
    path: str = "/health"
    share: bool = False
    min_memory_mib: int = 0  # a smaller -m does not fit this image: those variants run with this much


IMAGE_KINDS = {
    "httpd": Image("httpd", "service=httpd", "http"),
    "static": Image("static", "", "http", path="/", share=True),
    "kv": Image("kv", "appendonly=no", "resp", min_memory_mib=16),  # its 4 MiB store is taken at boot
    "api": Image("api", "kv=10.0.2.2:6379", "http"),  # kv is only dialled when a request needs it
}


@dataclass(frozen=True)
class Variant:
    name: str
    machine: str
    memory_mib: int
    huge_pages: bool  # False: started as ukproxy starts QEMU now (PR_SET_THP_DISABLE)
    legacy_command: bool = False  # the command line before -machine was given
    accel_options: str = ""  # appended to -accel's value, e.g. ",tb-size=16"
    machine_options: str = ""  # replaces -machine's value
    environment: tuple[tuple[str, str], ...] = ()

    def argv(self, spec: VmSpec) -> list[str]:
        argv = qemu_command(spec)
        if self.legacy_command:
            at = argv.index("-machine")
            del argv[at:at + 2]
        argv[argv.index("-accel") + 1] += self.accel_options
        if self.machine_options:
            argv[argv.index("-machine") + 1] = self.machine_options
        return argv


VARIANTS = (
    Variant("before: pc, huge pages", "pc", 16, huge_pages=True, legacy_command=True),
    Variant("pc", "pc", 16, huge_pages=False),
    Variant("pc, -m 8", "pc", 8, huge_pages=False),
    Variant("microvm, ACPI on", "microvm", 16, huge_pages=False, machine_options="microvm,ioapic2=off"),
    Variant("microvm", "microvm", 16, huge_pages=False),
    Variant("microvm, -m 8", "microvm", 8, huge_pages=False),
    Variant("microvm, tb-size 16", "microvm", 16, huge_pages=False, accel_options=",tb-size=16"),
    Variant("microvm, arena 1", "microvm", 16, huge_pages=False, environment=(("MALLOC_ARENA_MAX", "1"),)),
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(variant: Variant, image: Image, image_dir: Path, i: int, run_dir: Path) -> VmSpec:
    share = None
    if image.share:
        share = run_dir / "share"
        share.mkdir(exist_ok=True)
        (share / "index.html").write_text("<h1>density</h1>\n")
    return VmSpec(vm_id=f"density-{i}", image=str(image_dir / f"{image.name}.elf"), service_args=image.args,
                  ip=None, gateway=None, port=80, memory_mib=max(variant.memory_mib, image.min_memory_mib),
                  accel="tcg", mac="52:54:00:00:00:02", netns="bench", hostfwd_port=free_port(),
                  run_dir=str(run_dir), machine=variant.machine, share=None if share is None else str(share))


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> None:
    assert proc.stdout is not None
    seen = b""
    while b"\nready " not in b"\n" + seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no ready line (exit {proc.poll()}): {seen[-500:]!r}")
        if select.select([proc.stdout], [], [], left)[0]:
            seen += os.read(proc.stdout.fileno(), 4096)


def _answers(image: Image, port: int) -> bool:
    if image.probe == "resp":
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{image.path}", timeout=5) as r:
        return r.status == 200


def _first_answer(image: Image, port: int, deadline: float) -> None:
    while True:
        try:
            if _answers(image, port):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{image.name} on port {port} never answered")
        time.sleep(0.02)


def measure(variant: Variant, image: Image, image_dir: Path, n: int, run_dir: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    boots: list[float] = []
    try:
        for i in range(n):
            spec = _spec(variant, image, image_dir, i, run_dir)
            started = time.monotonic()
            launch = contextlib.nullcontext() if variant.huge_pages else _huge_pages_off()
            with launch:
                proc = subprocess.Popen(variant.argv(spec), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env={**os.environ, **dict(variant.environment)})
            procs.append(proc)
            _wait_ready(proc, started + READY_TIMEOUT)
            boots.append((time.monotonic() - started) * 1000)
            assert spec.hostfwd_port is not None
            _first_answer(image, spec.hostfwd_port, started + READY_TIMEOUT)
        time.sleep(1.0)  # idle, as a pool's VMs mostly are
        memory = [psutil.Process(p.pid).memory_full_info() for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    mib: Callable[[str], list[float]] = lambda field: [getattr(m, field) / 2**20 for m in memory]  # noqa: E731
    rss, pss, uss = mib("rss"), mib("pss"), mib("uss")
    result = {"image": image.name, "variant": variant.name, "machine": variant.machine,
              "guest_ram_mib": max(variant.memory_mib, image.min_memory_mib), "n": n,
              "rss_mib": statistics.median(rss), "pss_mib": statistics.median(pss),
              "uss_mib": statistics.median(uss), "boot_ms": statistics.median(boots),
              "vms_per_gib": 1024 / statistics.median(pss)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="VMs at once per configuration (default 8)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--images", default="httpd", help=f"comma-separated, of {', '.join(IMAGE_KINDS)}")
    parser.add_argument("--variants", default="", help="only configurations whose name contains one of these "
                        "comma-separated words (e.g. 'microvm')")
    parser.add_argument("--image-dir", type=Path, default=IMAGES, help="where the images are (default: the build)")
    args = parser.parse_args(argv)
    images = [IMAGE_KINDS[name] for name in args.images.split(",")]
    words = [w for w in args.variants.split(",") if w]
    variants = [v for v in VARIANTS if not words or any(w in v.name for w in words)]
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ukproxy-density-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    print(f"{args.n} VMs per configuration, TCG, on {os.cpu_count()} CPUs ({cpu})")
    print(f"{'image':7} {'configuration':24} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8} {'VMs/GiB':>8} "
          f"{'boot ms':>8}")
    results = []
    for image, variant in ((image, variant) for image in images for variant in variants):
        try:
            r = measure(variant, image, args.image_dir, args.n, run_dir)
        except RuntimeError as e:
            print(f"{image.name:7} {variant.name:24} failed: {e}")
            continue
        results.append(r)
        print(f"{image.name:7} {r['variant']:24} {r['rss_mib']:8.1f} {r['pss_mib']:8.1f} {r['uss_mib']:8.1f} "
              f"{r['vms_per_gib']:8.0f} {r['boot_ms']:8.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
