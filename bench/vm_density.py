"""Memory per VM and boot time, for each way of running QEMU: `python -m bench.vm_density [-n VMS]`.

Boots `n` httpd VMs at once per configuration (QEMU user networking, so no namespace is needed),
waits for each `ready` line and a first HTTP 200, lets them idle a second, then reads every QEMU's
memory: RSS (what `ps` shows; it counts the QEMU binary and libraries, shared by all VMs, in full),
PSS (the shared pages divided among the processes mapping them: what n VMs really cost, per VM) and
USS (private to the VM). VMs per GiB come from PSS.

Configurations: "before" is the command ukproxy used until this measurement (the default pc machine,
transparent huge pages on); "pc" and "microvm" are `ukproxy.vm.qemu.MACHINES` as ukproxy runs them
now (huge pages off); "-m 8" halves the guest RAM.

Where a VM's private memory goes (smaps of one idle httpd VM on microvm, 25 MiB): the image's
loaded size counts twice, because QEMU keeps a copy of the multiboot image as a ROM for reset and
the loader writes it, zero-filled .bss included, into guest RAM (about 5 MiB each for a 5 MiB
.bss, most of it lwIP's heap and pbuf pool); then QEMU's heap (4 MiB), its translation-block
hash table (2 MiB) and code buffer (1-2 MiB), and relocated library data. The QEMU binary and its
libraries (about 21 MiB of RSS) are shared by every VM: hence PSS, not RSS, for VMs per GiB.
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
IMAGE = REPO / "unikernels" / "build" / "httpd.elf"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Variant:
    name: str
    machine: str
    memory_mib: int
    huge_pages: bool  # False: started as ukproxy starts QEMU now (PR_SET_THP_DISABLE)
    legacy_command: bool = False  # the command line before -machine was given

    def argv(self, spec: VmSpec) -> list[str]:
        argv = qemu_command(spec)
        if self.legacy_command:
            at = argv.index("-machine")
            del argv[at:at + 2]
        return argv


VARIANTS = (
    Variant("before: pc, huge pages", "pc", 16, huge_pages=True, legacy_command=True),
    Variant("pc", "pc", 16, huge_pages=False),
    Variant("pc, -m 8", "pc", 8, huge_pages=False),
    Variant("microvm", "microvm", 16, huge_pages=False),
    Variant("microvm, -m 8", "microvm", 8, huge_pages=False),
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(variant: Variant, i: int, run_dir: Path) -> VmSpec:
    return VmSpec(vm_id=f"density-{i}", image=str(IMAGE), service_args="service=httpd", ip=None, gateway=None,
                  port=80, memory_mib=variant.memory_mib, accel="tcg", mac="52:54:00:00:00:02", netns="bench",
                  hostfwd_port=free_port(), run_dir=str(run_dir), machine=variant.machine)


def _wait_ready(proc: subprocess.Popen[bytes], deadline: float) -> None:
    assert proc.stdout is not None
    seen = b""
    while b"\nready " not in b"\n" + seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no ready line (exit {proc.poll()}): {seen[-500:]!r}")
        if select.select([proc.stdout], [], [], left)[0]:
            seen += os.read(proc.stdout.fileno(), 4096)


def _first_200(port: int, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def measure(variant: Variant, n: int, run_dir: Path) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    boots: list[float] = []
    try:
        for i in range(n):
            spec = _spec(variant, i, run_dir)
            started = time.monotonic()
            launch = contextlib.nullcontext() if variant.huge_pages else _huge_pages_off()
            with launch:
                proc = subprocess.Popen(variant.argv(spec), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
            procs.append(proc)
            _wait_ready(proc, started + READY_TIMEOUT)
            boots.append((time.monotonic() - started) * 1000)
            assert spec.hostfwd_port is not None
            _first_200(spec.hostfwd_port, started + READY_TIMEOUT)
        time.sleep(1.0)  # idle, as a pool's VMs mostly are
        memory = [psutil.Process(p.pid).memory_full_info() for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    mib: Callable[[str], list[float]] = lambda field: [getattr(m, field) / 2**20 for m in memory]  # noqa: E731
    rss, pss, uss = mib("rss"), mib("pss"), mib("uss")
    result = {"variant": variant.name, "machine": variant.machine, "guest_ram_mib": variant.memory_mib, "n": n,
              "rss_mib": statistics.median(rss), "pss_mib": statistics.median(pss),
              "uss_mib": statistics.median(uss), "boot_ms": statistics.median(boots),
              "vms_per_gib": 1024 / statistics.median(pss)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="VMs at once per configuration (default 8)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ukproxy-density-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    print(f"{args.n} VMs per configuration, TCG, on {os.cpu_count()} CPUs ({cpu})")
    print(f"{'configuration':24} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8} {'VMs/GiB':>8} {'boot ms':>8}")
    results = []
    for variant in VARIANTS:
        try:
            r = measure(variant, args.n, run_dir)
        except RuntimeError as e:
            print(f"{variant.name:24} failed: {e}")
            continue
        results.append(r)
        print(f"{r['variant']:24} {r['rss_mib']:8.1f} {r['pss_mib']:8.1f} {r['uss_mib']:8.1f} "
              f"{r['vms_per_gib']:8.0f} {r['boot_ms']:8.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
