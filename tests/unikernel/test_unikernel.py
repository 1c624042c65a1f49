"""The backend unikernel booted in QEMU (TCG) and driven by real clients.

VMs sit on a bridge in a network namespace made per module and deleted afterwards;
clients (curl, aiohttp, raw sockets) run inside that namespace. Behaviour only: speed
is measured by bench/unikernel_boot.py.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.unikernel_harness import UNIKERNELS, Lab, Vm, image_for, qemu_argv
from tests.running import free_port
from tests.unikernel import clients
from tests.unikernel.lab import needs_qemu, needs_root
from tests.waiting import wait_until

STATIC = UNIKERNELS / "services" / "httpd" / "embed"
TX_SLOTS = 256   # the VM's transmit ring

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(180), needs_qemu]


@pytest.fixture(scope="module")
def web(lab: Lab) -> Vm:
    return lab.boot("web-0")


def curl(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return lab.netns.run("curl", "-sS", "--max-time", "20", *args)


def raw(lab: Lab, vm: Vm, payload: bytes, shut: bool = False) -> dict:
    args = [vm.ip, str(vm.port), payload.hex()] + (["shut"] if shut else [])
    return lab.netns.python(clients.RAW, *args)


def statuses(data: str) -> list[int]:
    return [int(code) for code in re.findall(r"HTTP/1\.1 (\d{3}) ", data)]


# ---- routes ----

@needs_root
def test_ready_line_names_vm(web: Vm) -> None:
    assert web.wait_ready() == f"ready name=web-0 ip={web.ip} port=80 service=httpd"
    assert sum(line.startswith("ready") for line in web.lines) == 1


@needs_root
def test_answers_ping(lab: Lab, web: Vm) -> None:
    assert lab.netns.python(clients.PING, web.ip) == {"reply": True}


@needs_root
def test_root_names_the_vm(lab: Lab, web: Vm) -> None:
    r = curl(lab, "-i", f"http://{web.ip}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.1 200 OK")
    assert "web-0" in r.stdout.split("\n\n", 1)[1]   # text mode turned CRLF into LF
    assert "X-Backend: web-0" in r.stdout


@needs_root
def test_health(lab: Lab, web: Vm) -> None:
    r = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{web.ip}/health")
    assert r.stdout == "200"


@needs_root
@pytest.mark.parametrize("name", ["index.html", "small.txt", "large.txt"])
def test_static_files_are_served_byte_exact(lab: Lab, web: Vm, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    # the namespace shares the mount namespace, so curl can write into tmp_path
    r = curl(lab, "-o", str(out), "-w", "%{http_code} %{content_type}", f"http://{web.ip}/static/{name}")
    assert r.stdout.split(" ")[0] == "200"
    assert out.read_bytes() == (STATIC / name).read_bytes()
    assert ("text/html" if name.endswith(".html") else "text/plain") in r.stdout


@needs_root
def test_api_info_is_json(lab: Lab, web: Vm) -> None:
    r = curl(lab, f"http://{web.ip}/api/info")
    info = json.loads(r.stdout)
    assert info["name"] == "web-0"
    assert info["connections"] >= 1
    assert info["requests"] >= 1
    assert 0 < info["free_heap"] <= info["heap_size"]
    assert info["uptime_ms"] > 0


@needs_root
def test_api_work_burns_the_requested_time(lab: Lab, web: Vm) -> None:
    r = curl(lab, "-w", " %{time_total}", f"http://{web.ip}/api/work?ms=300")
    body, took = r.stdout.rsplit(" ", 1)
    assert json.loads(body) == {"name": "web-0", "worked_ms": 300}
    assert float(took) >= 0.25
    r = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{web.ip}/api/work?ms=abc")
    assert r.stdout == "400"


@needs_root
def test_head_has_length_but_no_body(lab: Lab, web: Vm) -> None:
    got = raw(lab, web, b"HEAD /static/small.txt HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    head, body = got["data"].split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 200")
    assert "Content-Length: 4096" in head
    assert body == ""


@needs_root
def test_unknown_path_is_404_and_wrong_method_405(lab: Lab, web: Vm) -> None:
    r = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{web.ip}/nope")
    assert r.stdout == "404"
    r = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{web.ip}/static/missing.txt")
    assert r.stdout == "404"
    r = curl(lab, "-i", "-X", "POST", "-d", "x=1", f"http://{web.ip}/health")
    assert r.stdout.startswith("HTTP/1.1 405")
    assert "Allow: GET, HEAD" in r.stdout


# ---- connections ----

@needs_root
def test_keep_alive_reuses_one_connection(lab: Lab, web: Vm) -> None:
    urls = [f"http://{web.ip}/health"] * 5
    r = curl(lab, "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
             "-o", "/dev/null", "-w", "%{num_connects}\n", *urls)
    assert r.stdout.split() == ["1", "0", "0", "0", "0"]


@needs_root
def test_http10_keeps_alive_only_when_asked(lab: Lab, web: Vm) -> None:
    got = raw(lab, web, b"GET /health HTTP/1.0\r\n\r\n")
    assert got["closed"] and "Connection: close" in got["data"]
    got = raw(lab, web, b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                        b"GET / HTTP/1.0\r\n\r\n")
    assert statuses(got["data"]) == [200, 200]
    assert "Connection: keep-alive" in got["data"]
    assert got["closed"]


@needs_root
def test_pipelined_requests_answered_in_order(lab: Lab, web: Vm) -> None:
    reqs = (b"GET /health HTTP/1.1\r\nHost: vm\r\n\r\n"
            b"GET /static/large.txt HTTP/1.1\r\nHost: vm\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: vm\r\n\r\n"
            b"POST /api/info HTTP/1.1\r\nHost: vm\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /api/info HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    got = raw(lab, web, reqs)
    data = got["data"]
    assert statuses(data) == [200, 200, 404, 405, 200]
    assert (STATIC / "large.txt").read_text() in data
    assert got["closed"]


@needs_root
def test_requests_then_half_close_are_still_answered(lab: Lab, web: Vm) -> None:
    got = raw(lab, web, b"GET /health HTTP/1.1\r\nHost: vm\r\n\r\n" * 3, shut=True)
    assert statuses(got["data"]) == [200, 200, 200]
    assert got["closed"]


@needs_root
@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),                      # no Host
        (b"GET nope HTTP/1.1\r\nHost: vm\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost vm\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: vm\r\n\r\n", 505),
        (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: vm\r\n\r\n", 414),
        (b"GET /" + b"a" * 9000, 414),                          # request line never ends
        (b"GET / HTTP/1.1\r\nHost: vm\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: vm\r\n" + b"X-Many: yes\r\n" * 800, 431),
        (b"POST / HTTP/1.1\r\nHost: vm\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ],
    ids=["garbage", "no-host", "relative-target", "no-colon", "http2", "long-uri", "endless-line",
         "big-header", "many-headers", "chunked"],
)
def test_malformed_requests_get_a_precise_status_and_close(lab: Lab, web: Vm, payload: bytes,
                                                           status: int) -> None:
    got = raw(lab, web, payload)
    assert statuses(got["data"]) == [status]
    assert "Connection: close" in got["data"]
    assert got["closed"]


@needs_root
def test_256_concurrent_connections(lab: Lab, web: Vm) -> None:
    got = lab.netns.python(clients.CONCURRENT, web.ip, "80", "256")
    assert got["info"]["connections"] >= 256
    assert got["statuses"] == ["200"] * 256
    assert got["sizes"] == [4096] * 256


@needs_root
def test_10000_requests_leave_the_heap_where_it_was(lab: Lab, web: Vm) -> None:
    got = lab.netns.python(clients.SEQUENTIAL, web.ip, "80", "10000", "500", timeout=150)
    assert got["done"] == 10000 and got["bad"] == 0
    assert got["after"]["requests"] - got["before"]["requests"] >= 10000
    assert got["after"]["free_heap"] == got["before"]["free_heap"]
    assert got["after"]["connections"] == 1


@needs_root
def test_a_port_reused_while_the_vm_holds_time_wait_connects_at_once(lab: Lab, web: Vm) -> None:
    # Each request asks the VM to close first, so the VM holds the 4-tuple in TIME-WAIT
    # when the same source port connects again: Linux clients and proxies reuse ports
    # like this once they have cycled through their range, and stock lwIP ignored the
    # new SYN for 2 MSL, so the VM "stopped answering" under connection churn.
    src = 20000 + secrets.randbelow(10000)
    got = lab.netns.python(clients.SAME_PORT, web.ip, "80", str(src), "3", timeout=60)
    # Answered within the client's 5 s connect timeout, not after TIME-WAIT's 2 MSL (30 s)
    assert [r["ok"] for r in got] == [True] * 3, got
    assert _info(lab, web)["tw_recycled"] >= 2


@needs_root
@pytest.mark.skipif(not shutil.which("ab"), reason="ab is not installed")
def test_connection_churn_through_few_client_ports_keeps_being_answered(lab: Lab, web: Vm) -> None:
    # The benchmark's wedge, shrunk: 1000 HTTP/1.0 requests (the VM closes each connection
    # first, so it holds TIME-WAIT) from a client limited to 200 ports, so every port comes
    # back several times within TIME-WAIT. Stock lwIP ignored those SYNs: ab timed out.
    key = "net.ipv4.ip_local_port_range"
    saved = lab.netns.run("sysctl", "-n", key).stdout.split()
    lab.netns.exec_ok("sysctl", "-w", f"{key}=41000 41199")
    try:
        r = lab.netns.run("ab", "-c", "8", "-n", "1000", "-s", "5", f"http://{web.ip}/health", timeout=60)
    finally:
        lab.netns.exec_ok("sysctl", "-w", f"{key}={saved[0]} {saved[1]}")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr
    assert re.search(r"Complete requests:\s+1000\b", r.stdout), r.stdout
    assert re.search(r"Failed requests:\s+0\b", r.stdout), r.stdout


@needs_root
def test_an_nmi_prints_the_counters_and_the_vm_carries_on(lab: Lab, web: Vm) -> None:
    # QMP inject-nmi is how to look inside a VM that no longer answers.
    seen = len(web.lines)
    assert all("return" in r for r in web.qmp("inject-nmi"))
    wait_until(lambda: web.lines[seen:], "the NMI's counters on the console", timeout=10,
               accept=lambda lines: any(line.startswith("nmi: tx ") for line in lines))
    dump = [line for line in web.lines[seen:] if line.startswith("nmi: ")]
    assert [line.split()[1].split("=")[0] for line in dump] == ["uptime_ms", "rx", "tx", "mem"], dump
    assert _info(lab, web)["name"] == "web-0"


def _info(lab: Lab, vm: Vm) -> dict:
    r = curl(lab, "--max-time", "5", f"http://{vm.ip}/api/info")
    assert r.returncode == 0, f"{vm.name} does not answer: {r.stderr}\n{vm.output()[-2000:]}"
    return json.loads(r.stdout)


POOLS = ("free_heap", "pbuf_pool_free", "seg_free", "pbuf_ref_free", "pcb_free")


def _settled(lab: Lab, vm: Vm, timeout: float, like: dict | None = None) -> dict:
    """/api/info once only our own request's connection is left and the pools are back
    where `like` had them (closing pcbs linger until the last ACK), or the deadline passed.
    `asked` and `answered` bracket, in host time, the moment the VM read its uptime."""

    def timed_info() -> dict:
        asked = time.monotonic()
        info = _info(lab, vm)
        return {**info, "asked": asked, "answered": time.monotonic()}

    def settled(info: dict) -> bool:
        return info["connections"] == 1 and (like is None or all(info[k] == like[k] for k in POOLS))

    try:
        return wait_until(timed_info, "the VM's connections and pools to settle", accept=settled,
                          timeout=timeout, interval=0.5)
    except AssertionError:
        return timed_info()  # the caller's assertions say what did not settle


@needs_root
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
def test_sustained_keep_alive_load_leaves_the_vm_answering_with_its_memory_back(lab: Lab) -> None:
    # 64 keep-alive connections pulling a 64 KiB file for 5 s overflow the TX ring and
    # the TAP queue over and over; afterwards the VM must answer and every pool (heap,
    # pbufs, segments, pcbs, ring slots) must return to its level. No speed asserted.
    # The load starts while the VM still calibrates its clock (the first 500 ms): its
    # uptime must keep pace with ours anyway, or every lwIP timer drifts with it.
    vm = lab.boot("load-0")
    before = _settled(lab, vm, 5)
    r = lab.netns.run("wrk", "-t2", "-c64", "-d5s", "--timeout", "5s", f"http://{vm.ip}/static/large.txt",
                      timeout=40)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+ requests in", r.stdout), r.stdout
    after = _settled(lab, vm, 20, like=before)
    vm_s = (after["uptime_ms"] - before["uptime_ms"]) / 1000
    # Host time between the VM's two readings lies in [shortest, longest] whatever the load; a clock
    # counting late ticks ran 30-40 % slow. 20 % covers a calibration the load disturbed, and no more.
    shortest, longest = after["asked"] - before["answered"], after["answered"] - before["asked"]
    assert 0.8 * shortest <= vm_s <= 1.2 * longest, (vm_s, shortest, longest)
    assert after["requests"] - before["requests"] > 100, (before, after)
    assert after["connections"] == 1, after
    for key in POOLS:
        assert after[key] == before[key], (key, before, after)
    assert after["tx_free"] >= TX_SLOTS - 8, after   # a few frames may still be with QEMU
    assert after["mem_err"] == 0, after
    h = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{vm.ip}/health")
    assert h.stdout == "200", vm.output()[-2000:]


@needs_root
def test_gratuitous_arp_announces_the_vm(lab: Lab) -> None:
    ip = lab.netns.address(lab._next_host)
    cap = subprocess.Popen(lab.netns.cmd(sys.executable, "-c", clients.GARP, ip),
                           stdout=subprocess.PIPE, text=True)
    try:
        assert cap.stdout and cap.stdout.readline().strip() == "listening"
        vm = lab.boot("garp-0")
        got = json.loads(cap.stdout.readline())
        assert got["mac"] == vm.mac
    finally:
        cap.kill()
        cap.wait()


@needs_root
def test_many_pipelined_requests_with_large_replies(lab: Lab, web: Vm) -> None:
    # ~9 KiB of requests asking for ~3.2 MiB: replies must follow the send buffer
    # while the unread requests wait in the receive window.
    n = 50
    reqs = b"GET /static/large.txt HTTP/1.1\r\nHost: vm\r\n\r\n" * n
    got = raw(lab, web, reqs + b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    assert statuses(got["data"]) == [200] * (n + 1)
    assert got["data"].count((STATIC / "large.txt").read_text()) == n


@needs_root
def test_idle_keep_alive_connections_are_closed(lab: Lab) -> None:
    vm = lab.boot("idle-0", extra="idle_timeout=1")
    got = raw(lab, vm, b"GET /health HTTP/1.1\r\nHost: vm\r\n\r\n")
    assert statuses(got["data"]) == [200]
    assert got["closed"]  # by the VM within the client's 20 s of silence: the 1 s timeout, not the default 75 s


# ---- echo ----

@pytest.fixture(scope="module")
def echo(lab: Lab) -> Vm:
    return lab.boot("echo-0", service="echo", port=7)


@needs_root
def test_echo_returns_one_mebibyte_intact(lab: Lab, echo: Vm) -> None:
    got = lab.netns.python(clients.ECHO, echo.ip, "7", str(1 << 20))
    assert got["len"] == 1 << 20
    assert got["got"] == got["sent"]


@needs_root
def test_echo_holds_back_a_writer_whose_reader_waits(lab: Lab, echo: Vm) -> None:
    # The client writes 1 MiB but reads nothing for 2 s: the echo must stop
    # acknowledging (closed windows), not buffer or drop, and resume intact.
    got = lab.netns.python(clients.ECHO, echo.ip, "7", str(1 << 20), "2")
    assert got["len"] == 1 << 20
    assert got["got"] == got["sent"]


# ---- lifecycle ----

def test_missing_nic_is_a_fatal_error(image: Path, tmp_path: Path) -> None:
    argv = qemu_argv(append="ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=x service=httpd", netdev="user,id=n0")
    cut = argv.index("-netdev")
    argv = argv[:cut] + argv[cut + 4:]   # drop -netdev ... -device virtio-net-pci ...
    vm = Vm(argv=argv, workdir=tmp_path, name="nonic")
    try:
        vm.start()
        rc = vm.wait_exit(timeout=30)
    finally:
        vm.stop()
    assert rc != 0
    assert any(line.startswith("error: no virtio-net device") for line in vm.lines), vm.output()


@needs_root
def test_qmp_system_powerdown_exits_cleanly(lab: Lab) -> None:
    vm = lab.boot("down-0")
    replies = vm.qmp("system_powerdown")
    assert all("return" in r for r in replies), replies
    assert vm.wait_exit(timeout=20) == 0
    assert any("shutting down" in line for line in vm.lines)


@pytest.mark.parametrize(
    ("append", "message"),
    [
        ("gw=10.0.2.2 port=80 name=x service=httpd", "missing ip="),
        ("ip=10.0.2.15 gw=10.0.2.2 port=80 name=x service=httpd", "ip must be ADDR/PREFIX"),
        ("ip=10.0.2.15/24 gw=10.0.2.2 port=99999 name=x service=httpd", "port must be"),
        ("ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=x service=ftp", "service must be"),
        ("ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=x service=httpd color=red", "unknown argument"),
        ("ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=x service=httpd idle_timeout=0", "idle_timeout must be"),
        ("ip=10.0.2.300/24 gw=10.0.2.2 port=80 name=x service=httpd", "ip must be"),
        ("ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=a/b service=httpd", "name may hold only"),
    ],
    ids=["missing-ip", "no-prefix", "bad-port", "bad-service", "unknown", "bad-idle", "bad-octet", "bad-name"],
)
def test_bad_command_line_prints_one_error_and_exits_nonzero(image: Path, tmp_path: Path, append: str,
                                                             message: str) -> None:
    vm = Vm(argv=qemu_argv(append=append, netdev="user,id=n0"), workdir=tmp_path, name="bad")
    try:
        vm.start()
        rc = vm.wait_exit(timeout=30)
    finally:
        vm.stop()
    errors = [line for line in vm.lines if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], vm.output()
    assert rc != 0
    assert not any(line.startswith("ready") for line in vm.lines)


def test_user_networking_needs_no_root(image: Path, tmp_path: Path) -> None:
    port = free_port()
    argv = qemu_argv(
        append="ip=10.0.2.15/24 gw=10.0.2.2 port=80 name=user-0 service=httpd",
        netdev=f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80",
    )
    vm = Vm(argv=argv, workdir=tmp_path, name="user-0")
    try:
        vm.start()
        vm.wait_ready()
        r = wait_until(lambda: subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
                                              capture_output=True, text=True),
                       "the forwarded port to answer", accept=lambda r: r.returncode == 0, interval=0.1)
        assert "user-0" in r.stdout, r.stderr
    finally:
        vm.stop()


def test_each_image_is_small_and_holds_only_its_service(image: Path) -> None:
    # make checks the 1 MiB bound; --gc-sections keeps httpd's routes out of echo's image.
    for service in ("httpd", "echo"):
        data = image_for(service).read_bytes()
        assert len(data) <= 1 << 20
        assert (b"/api/work" in data) == (service == "httpd")
