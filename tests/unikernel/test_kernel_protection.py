"""The unikernel kernel's own protections, in QEMU (TCG): memory protection (paging with
read-only code, no-execute data, an unmapped NULL page and a stack guard page), an idle VM
that does not tick, and TIME-WAIT given up only to a SYN whose checksums are right.

The memory tests boot with the hidden `selftest=KIND` argument, which makes the kernel
commit that fault right after paging is on: each must end in the panic exit (QEMU exit
status 7), never run on.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from bench.unikernel_harness import Lab, Vm, qemu_argv
from tests.running import free_port
from tests.unikernel.lab import api_info, needs_qemu, needs_root

PANIC_EXIT = 7   # isa-debug-exit code 3: QEMU exits 2*3+1

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180), needs_qemu]


# ---- memory protection ----

@pytest.mark.parametrize(
    ("kind", "report"),
    [
        ("write-code", "page fault: write to a read-only page"),
        ("exec-data", "page fault: instruction fetch from a no-execute page"),
        ("stack", "double fault (stack overflow)"),
        ("null", "page fault: NULL pointer dereference: cr2=0 "),
    ],
)
def test_a_forbidden_access_ends_in_the_panic_exit(image: Path, tmp_path: Path, kind: str, report: str) -> None:
    append = f"ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=st service=httpd selftest={kind}"
    vm = Vm(argv=qemu_argv(append=append, netdev="user,id=n0,restrict=on", image=image), workdir=tmp_path,
            name=f"selftest-{kind}")
    try:
        vm.start()
        rc = vm.wait_exit(timeout=60)
    finally:
        vm.stop()
    panics = [line for line in vm.lines if line.startswith("panic: ")]
    assert rc == PANIC_EXIT, vm.output()
    assert len(panics) == 1 and panics[0].startswith("panic: " + report), vm.output()
    assert "eip=" in panics[0] and "cr2=" in panics[0]
    assert not any("did not fault" in line or line.startswith("ready") for line in vm.lines), vm.output()


# ---- in a namespace ----

@pytest.fixture(scope="module")
def web(lab: Lab) -> Vm:
    return lab.boot("prot-0")


@needs_root
def test_an_idle_vm_is_not_woken_by_a_fixed_tick(lab: Lab, web: Vm) -> None:
    # The kernel sleeps until lwIP's next timeout (its ARP timer: once a second) instead of
    # taking a 20 Hz tick. The window includes the clock's 500 ms calibration, when the
    # tick still runs, hence the slack; a ticking VM would count ~80.
    before, t0 = api_info(lab, web), time.monotonic()
    while time.monotonic() - t0 < 4:
        time.sleep(0.5)
    after, t1 = api_info(lab, web), time.monotonic()
    ticks = after["ticks"] - before["ticks"]
    assert ticks <= 2 * (t1 - t0) + 10, (before, after)
    assert after["uptime_ms"] - before["uptime_ms"] >= 3000   # the clock kept running meanwhile


# Leaves the VM holding (gateway, SRC) <-> (vm, port) in TIME-WAIT, then sends SYNs for that
# pair with a bad TCP checksum (two sequence numbers 2^31 apart, so one of them lies beyond
# what the old connection used), then connects again properly. /api/info's tw_recycled is
# read after each step.
BAD_SYN = r'''
import json, secrets, socket, struct, sys
ip, port, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def info():
    with socket.create_connection((ip, port), timeout=10) as s:
        s.sendall(b"GET /api/info HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])

def close_first_from(src):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", src))
    s.settimeout(10)
    s.connect((ip, port))
    local = s.getsockname()[0]
    s.sendall(b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    return local, data.startswith(b"HTTP/1.1 200")

def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s >> 16) + (s & 0xFFFF)
    return ~s & 0xFFFF

def syn(local, seq, damage):
    hdr = struct.pack("!HHIIBBHHH", src, port, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(local) + socket.inet_aton(ip) + struct.pack("!BBH", 0, 6, len(hdr))
    good = csum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", good ^ damage) + hdr[18:]

local, first_ok = close_first_from(src)
tw0 = info()["tw_recycled"]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
seq = secrets.randbits(32)
for s in (seq, (seq + (1 << 31)) & 0xFFFFFFFF):
    raw.sendto(syn(local, s, 0x0F0F), (ip, 0))
tw1 = info()["tw_recycled"]   # the VM handles frames in order: the bad SYNs came first
_, again_ok = close_first_from(src)
tw2 = info()["tw_recycled"]
print(json.dumps({"first_ok": first_ok, "again_ok": again_ok, "tw": [tw0, tw1, tw2]}))
'''


@needs_root
def test_a_syn_with_a_bad_checksum_leaves_time_wait_alone(lab: Lab, web: Vm) -> None:
    src = 30000 + secrets.randbelow(10000)
    got = lab.netns.python(BAD_SYN, web.ip, str(web.port), str(src), timeout=60)
    assert got["first_ok"] and got["again_ok"], got
    tw0, tw1, tw2 = got["tw"]
    assert tw1 == tw0, got   # the damaged SYNs did not end the TIME-WAIT...
    assert tw2 == tw0 + 1, got   # ...which was still there for the good SYN to end


# ---- microvm ----

def test_on_microvm_the_nic_interrupts_arrive(image: Path, tmp_path: Path) -> None:
    # microvm wires its virtio-mmio transports to I/O APIC lines past the PIC's 16 (GSI 24+, or
    # 16+ with ioapic2=off), or to ISA lines 5+ without ACPI. Were they not routed, the VM would
    # still answer, late, whenever a timer woke it to poll: the NIC's interrupt count is what tells.
    for machine in ("microvm", "microvm,ioapic2=off", "microvm,acpi=off,x-option-roms=off"):
        port = free_port()
        argv = qemu_argv(append="ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=mvm-0 service=httpd",
                         netdev=f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80", image=image)
        argv[argv.index("-accel"):argv.index("-accel")] = ["-M", machine]
        argv = [("virtio-net-device,netdev=n0" if a.startswith("virtio-net-pci") else a) for a in argv]
        vm = Vm(argv=argv, workdir=tmp_path, name=f"mvm-{machine}")
        try:
            vm.start()
            vm.wait_ready()
            info = _get_json(f"http://127.0.0.1:{port}/api/info")
            assert info["name"] == "mvm-0"
            info = _get_json(f"http://127.0.0.1:{port}/api/info")
            assert info["irqs"] > 0, (machine, info)
        finally:
            vm.stop()


def _get_json(url: str) -> dict:
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(["curl", "-sS", "--max-time", "5", url], capture_output=True, text=True)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)
