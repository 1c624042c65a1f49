"""The `static` unikernel serving a host folder over virtio-9p, driven by real clients.

One VM per module, in a namespace of its own, shares a temp folder read-only; a folder next to it
holds a secret that no request may ever reach (through `..`, encodings, symlinks). Behaviour only:
speed is for bench/.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from bench.unikernel_harness import QEMU, UNIKERNELS, Lab, Vm, qemu_argv
from tests.unikernel import hostile_clients, static_clients
from tests.unikernel.lab import VMS_IN_A_NAMESPACE, built
from tests.unikernel.test_static_logic import TRAVERSAL

IMAGE = UNIKERNELS / "build" / "static.elf"
SECRET = f"TOP-SECRET-{secrets.token_hex(8)}"

pytestmark = [*VMS_IN_A_NAMESPACE, pytest.mark.timeout(300)]


def share_args(folder: Path, tag: str = "share") -> list[str]:
    return ["-fsdev", f"local,id=f0,path={folder},security_model=none,readonly=on",
            "-device", f"virtio-9p-pci,fsdev=f0,mount_tag={tag},disable-modern=on"]


def microvm_argv(append: str, netdev: str, mac: str, folder: Path, tag: str) -> list[str]:
    """QEMU's microvm machine, as ukproxy starts it: NIC and share on virtio-mmio."""
    return [QEMU, "-M", "microvm,ioapic2=off", "-accel", "tcg", "-nodefaults", "-no-user-config", "-nographic",
            "-no-reboot", "-m", "16", "-kernel", str(IMAGE), "-append", append, "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-netdev", netdev, "-device", f"virtio-net-device,netdev=n0,mac={mac}",
            "-fsdev", f"local,id=f0,path={folder},security_model=none,readonly=on",
            "-device", f"virtio-9p-device,fsdev=f0,mount_tag={tag}"]


def boot_static(lab: Lab, name: str, host: int, folder: Path, extra: str = "", tag: str = "share",
                wait: bool = True, microvm: bool = False, memory: str = "16") -> Vm:
    """A static VM at .HOST of the lab's subnet (100 and up: Lab.boot numbers its VMs from 10)."""
    ip = lab.netns.address(host)
    tap = lab.netns.add_tap()
    mac = f"52:54:00:78:{lab.netns.subnet:02x}:{host:02x}"
    append = f"ip={ip}/24 gw={lab.netns.gateway} port=80 name={name} {extra}".strip()
    netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
    if microvm:
        argv = lab.netns.cmd(*microvm_argv(append, netdev, mac, folder, tag))
    else:
        argv = lab.netns.cmd(*qemu_argv(append=append, netdev=netdev, mac=mac, memory=memory, image=IMAGE),
                             *share_args(folder, tag))
    vm = Vm(argv=argv, workdir=lab.workdir, name=name, ip=ip, mac=mac, port=80)
    lab.vms.append(vm)
    vm.start()
    if wait:
        vm.wait_ready()
    return vm


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """share/ with the files the tests fetch; outside/ next to it with the secret."""
    root = tmp_path_factory.mktemp("static")
    share, outside = root / "share", root / "outside"
    (share / "docs").mkdir(parents=True)
    (share / "empty").mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (share / "index.html").write_text("<h1>root index</h1>\n")
    (share / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (share / "docs" / "a b.txt").write_text("spaced\n")
    (share / "small.txt").write_bytes(os.urandom(4096).hex()[:4096].encode())
    (share / "data.json").write_text('{"ok": true}\n')
    (share / "health").write_text("ok\n")   # what hostile_clients.PROBE asks for
    (share / "f64k.bin").write_bytes(os.urandom(65536))
    (share / "big.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (share / "empty.txt").write_bytes(b"")
    (share / "escape").symlink_to(outside / "secret.txt")
    (share / "escape_rel").symlink_to("../outside/secret.txt")
    (share / "linkdir").symlink_to(outside)
    (share / "inner_link.txt").symlink_to("small.txt")   # inside the share, but a symlink all the same
    os.mkfifo(share / "fifo")
    return share


@pytest.fixture(scope="module")
def image() -> Path:
    """The static service's image: the conftest's `lab` builds this one instead of httpd's."""
    built("static")
    return IMAGE


@pytest.fixture(scope="module")
def vm(lab: Lab, files: Path) -> Vm:
    return boot_static(lab, "static-0", 100, files)


class Session:
    """static_clients.SESSION inside the namespace: requests over one keep-alive connection."""

    def __init__(self, lab: Lab, vm: Vm) -> None:
        assert vm.ip
        self.proc = subprocess.Popen(
            lab.netns.cmd(sys.executable, "-c", static_clients.SESSION, vm.ip, str(vm.port)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def send(self, raw: bytes, methods: list[str]) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"send": raw.hex(), "methods": methods}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"session client died ({self.proc.poll()})"
        return json.loads(line)

    def get(self, target: str | bytes, method: str = "GET", headers: str = "") -> dict:
        t = target.encode() if isinstance(target, str) else target
        answer = self.send(method.encode() + b" " + t + b" HTTP/1.1\r\nHost: vm\r\n" + headers.encode() + b"\r\n",
                           [method])
        assert answer["responses"], answer
        return answer["responses"][0]

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def http(lab: Lab, vm: Vm) -> Iterator[Session]:
    s = Session(lab, vm)
    yield s
    s.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- files, types, directories ----

def test_ready_names_the_service(vm: Vm) -> None:
    assert vm.wait_ready() == f"ready name=static-0 ip={vm.ip} port=80 service=static"


def test_files_are_served_with_their_type(http: Session, files: Path) -> None:
    for target, name, ctype in [("/small.txt", "small.txt", "text/plain; charset=utf-8"),
                                ("/data.json", "data.json", "application/json"),
                                ("/f64k.bin", "f64k.bin", "application/octet-stream"),
                                ("/docs/a%20b.txt", "docs/a b.txt", "text/plain; charset=utf-8")]:
        r = http.get(target)
        assert r["status"] == 200, target
        assert r["headers"]["content-type"] == ctype
        assert r["headers"]["x-backend"] == "static-0"
        assert r["sha256"] == sha((files / name).read_bytes())
    r = http.get("/empty.txt")
    assert (r["status"], r["headers"]["content-length"], r["len"]) == (200, "0", 0)


def test_directory_serves_its_index_and_gets_its_slash(http: Session, files: Path) -> None:
    r = http.get("/")
    assert r["status"] == 200 and r["body"] == (files / "index.html").read_text()
    assert r["headers"]["content-type"] == "text/html; charset=utf-8"
    r = http.get("/docs/")
    assert r["status"] == 200 and r["body"] == (files / "docs" / "index.html").read_text()
    r = http.get("/docs")
    assert r["status"] == 301 and r["headers"]["location"] == "docs/"
    r = http.get("/docs?x=1")
    assert r["status"] == 301 and r["headers"]["location"] == "docs/?x=1"
    assert http.get("/empty/")["status"] == 404          # a directory without index.html
    assert http.get("/small.txt/")["status"] == 404      # a file asked for as a directory
    assert http.get("/missing.txt")["status"] == 404


def test_curl_follows_the_redirect(lab: Lab, vm: Vm, files: Path) -> None:
    r = lab.netns.run("curl", "-sS", "-L", "--max-time", "20", f"http://{vm.ip}/docs")
    assert r.returncode == 0 and r.stdout == (files / "docs" / "index.html").read_text()


def test_head_has_the_headers_of_get_and_no_body(http: Session) -> None:
    get = http.get("/small.txt")
    answer = http.send(b"HEAD /small.txt HTTP/1.1\r\nHost: vm\r\n\r\nGET /data.json HTTP/1.1\r\nHost: vm\r\n\r\n",
                       ["HEAD", "GET"])
    head, after = answer["responses"]
    assert head["status"] == 200 and head["len"] == 0
    for k in ("content-length", "content-type", "etag", "last-modified"):
        assert head["headers"][k] == get["headers"][k]
    assert after["status"] == 200 and after["body"] == '{"ok": true}\n'   # nothing stray between them


def test_other_methods_get_405_and_the_connection_stays(http: Session) -> None:
    answer = http.send(b"POST /small.txt HTTP/1.1\r\nHost: vm\r\nContent-Length: 5\r\n\r\nhello"
                       b"DELETE / HTTP/1.1\r\nHost: vm\r\n\r\nGET /data.json HTTP/1.1\r\nHost: vm\r\n\r\n",
                       ["POST", "DELETE", "GET"])
    statuses = [r["status"] for r in answer["responses"]]
    assert statuses == [405, 405, 200]
    assert answer["responses"][0]["headers"]["allow"] == "GET, HEAD"
    assert not answer["closed"]


def test_keep_alive_and_pipelining(http: Session, files: Path) -> None:
    etag = http.get("/small.txt")["headers"]["etag"]
    batch = (b"GET /small.txt HTTP/1.1\r\nHost: vm\r\n\r\n"
             b"GET /f64k.bin HTTP/1.1\r\nHost: vm\r\nRange: bytes=0-9\r\n\r\n"
             b"GET /small.txt HTTP/1.1\r\nHost: vm\r\nIf-None-Match: " + etag.encode() + b"\r\n\r\n"
             b"GET /nope HTTP/1.1\r\nHost: vm\r\n\r\n"
             b"GET /f64k.bin HTTP/1.1\r\nHost: vm\r\n\r\n"
             b"GET /data.json HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
    answer = http.send(batch, ["GET"] * 6)
    assert answer["reused"]
    assert [r["status"] for r in answer["responses"]] == [200, 206, 304, 404, 200, 200]
    assert answer["responses"][4]["sha256"] == sha((files / "f64k.bin").read_bytes())
    assert answer["closed"]


def test_http10_keeps_alive_only_when_asked(http: Session) -> None:
    answer = http.send(b"GET /data.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ["GET"])
    assert answer["responses"][0]["headers"]["connection"] == "keep-alive" and not answer["closed"]
    answer = http.send(b"GET /data.json HTTP/1.0\r\n\r\n", ["GET"])
    assert answer["responses"][0]["status"] == 200 and answer["closed"]


def test_malformed_requests_get_400_and_are_closed(http: Session) -> None:
    for raw in (b"GET /small.txt HTTP/1.1\r\n\r\n",                       # no Host
                b"GET /small.txt HTTP/1.1\r\nHost: vm\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
                b"GET /small.txt\r\n\r\n"):
        answer = http.send(raw, ["GET"])
        assert answer["responses"][0]["status"] == 400 and answer["closed"], raw
    # beyond the 8 KiB head limit, though within what the connection layer buffers (one TCP window)
    big = b"GET /small.txt HTTP/1.1\r\nHost: vm\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert http.send(big, ["GET"])["responses"][0]["status"] == 431
    long_target = b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: vm\r\n\r\n"
    assert http.send(long_target, ["GET"])["responses"][0]["status"] == 414
    assert http.get("/data.json")["status"] == 200   # and a fresh connection is served


# ---- validators and ranges ----

def test_etag_and_if_none_match(http: Session) -> None:
    r = http.get("/small.txt")
    etag = r["headers"]["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for field in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r304 = http.get("/small.txt", headers=f"If-None-Match: {field}\r\n")
        assert r304["status"] == 304 and r304["len"] == 0, field
        assert r304["headers"]["etag"] == etag
    assert http.get("/small.txt", headers='If-None-Match: "nope"\r\n')["status"] == 200


def test_if_modified_since(http: Session) -> None:
    modified = http.get("/small.txt")["headers"]["last-modified"]
    assert http.get("/small.txt", headers=f"If-Modified-Since: {modified}\r\n")["status"] == 304
    assert http.get("/small.txt", headers="If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n")["status"] == 200
    assert http.get("/small.txt", headers="If-Modified-Since: Saturday, 01-Jan-00 00:00:00 GMT\r\n")["status"] == 200
    assert http.get("/small.txt", headers="If-Modified-Since: not a date\r\n")["status"] == 200


def test_ranges(http: Session, files: Path) -> None:
    data = (files / "f64k.bin").read_bytes()
    size = len(data)
    for field, start, end in [("bytes=0-99", 0, 99), ("bytes=65000-", 65000, size - 1),
                              ("bytes=-100", size - 100, size - 1), ("bytes=100-999999", 100, size - 1)]:
        r = http.get("/f64k.bin", headers=f"Range: {field}\r\n")
        assert r["status"] == 206, field
        assert r["headers"]["content-range"] == f"bytes {start}-{end}/{size}"
        assert r["sha256"] == sha(data[start:end + 1])
    for field in (f"bytes={size}-", "bytes=-0", f"bytes={size * 2}-{size * 3}"):
        r = http.get("/f64k.bin", headers=f"Range: {field}\r\n")
        assert r["status"] == 416, field
        assert r["headers"]["content-range"] == f"bytes */{size}"
    r = http.get("/f64k.bin", headers="Range: bytes=0-1,5-6\r\n")   # several ranges: all of it
    assert r["status"] == 200 and r["sha256"] == sha(data)
    etag = r["headers"]["etag"]
    assert http.get("/f64k.bin", headers=f"Range: bytes=0-9\r\nIf-Range: {etag}\r\n")["status"] == 206
    assert http.get("/f64k.bin", headers='Range: bytes=0-9\r\nIf-Range: "stale"\r\n')["status"] == 200


def test_ten_mib_file_is_byte_exact(lab: Lab, vm: Vm, files: Path, tmp_path: Path) -> None:
    out = tmp_path / "big.bin"   # the namespace shares the mount namespace: curl writes here
    r = lab.netns.run("curl", "-sS", "--max-time", "120", "-o", str(out), "-w", "%{http_code}",
                      f"http://{vm.ip}/big.bin", timeout=150)
    assert r.stdout == "200", r.stderr
    assert sha(out.read_bytes()) == sha((files / "big.bin").read_bytes())


# ---- a file changed on the host ----

def test_a_file_edited_on_the_host_is_served_changed_within_the_cache_bound(http: Session, files: Path) -> None:
    # The VM caches open files for open_file_cache_valid_ms (default 1 s): an edit shows within that
    # bound (plus a request's time on a loaded host). test_static_cache.py has the cache off and its bounds.
    f = files / "live.txt"
    f.write_text("version 1\n")
    first = http.get("/live.txt")
    assert first["body"] == "version 1\n"
    # Same size, in place, within the same second: only content and mtime's nanoseconds differ.
    with f.open("r+") as fh:
        fh.write("version 2\n")
    answer = wait_for_body(http, "/live.txt", "version 2\n", bound=CACHE_BOUND,
                           differs_from=first["headers"]["etag"])
    assert answer["headers"]["etag"] != first["headers"]["etag"]
    # Replaced by rename (a new inode), as editors and deploy tools do.
    tmp = files / ".live.tmp"
    tmp.write_text("version three\n")
    tmp.replace(f)
    wait_for_body(http, "/live.txt", "version three\n", bound=CACHE_BOUND)
    # Same connection throughout: nothing is cached per connection either.
    assert http.get("/live.txt", headers=f"If-None-Match: {first['headers']['etag']}\r\n")["status"] == 200


CACHE_BOUND = 1.0 + 2.0   # the default open_file_cache_valid_ms, plus a request's time under TCG and load


def wait_for_body(http: Session, target: str, body: str, bound: float, differs_from: str = "") -> dict:
    """Asks until the body is `body` (and its ETag not `differs_from`), at most `bound` seconds after the
    change (the service's promise)."""
    deadline = time.monotonic() + bound
    while True:
        r = http.get(target)
        fresh = r["body"] == body and r["headers"].get("etag") != differs_from
        if fresh or time.monotonic() > deadline:
            assert fresh, f"still {r['body']!r} ({r['headers'].get('etag')}) {bound} s after the change"
            return r


# ---- never outside the share ----

SHARE_TRAVERSAL = [
    b"/../outside/secret.txt", b"/%2e%2e/outside/secret.txt", b"/..%2foutside%2fsecret.txt",
    b"/docs/../../outside/secret.txt", b"/docs/%2e%2e/%2e%2e/outside/secret.txt", b"/%2E%2E%2Foutside%2Fsecret.txt",
    b"/..%5coutside%5csecret.txt", b"/escape", b"/escape_rel", b"/linkdir/secret.txt", b"/linkdir/", b"/linkdir",
    b"/inner_link.txt", b"/fifo", b"/secret.txt%00.html", b"//outside/secret.txt", b"/.%2e/outside/secret.txt",
    b"/%c0%ae%c0%ae/outside/secret.txt", b"/docs/..", b"/docs/.",
]


def test_traversal_corpus_over_http(http: Session) -> None:
    # the request line cannot carry raw spaces or control bytes: those are the parser's 400s
    corpus = [t for t in TRAVERSAL if t and all(0x20 < c < 0x7F for c in t)] + SHARE_TRAVERSAL
    for target in corpus:
        r = http.get(target)
        assert r["status"] in (400, 404, 414), (target, r["status"])
        assert SECRET not in r["body"], target
    assert http.get(b"/%2e%2e/outside/secret.txt", method="HEAD")["status"] == 404
    assert http.get("/small.txt")["status"] == 200   # and still serving


def test_absolute_form_and_asterisk_are_refused(http: Session) -> None:
    assert http.get(b"http://vm/../outside/secret.txt")["status"] == 400
    assert http.get(b"*", method="OPTIONS")["status"] == 400


def test_random_hostile_requests_get_answers_and_never_the_secret(lab: Lab, vm: Vm, http: Session) -> None:
    assert vm.ip
    got = lab.netns.python(static_clients.FUZZ, vm.ip, "80", "400", "8", "12", SECRET, timeout=240)
    assert got["leaked"] == [], got["leaked"]
    assert got["n_errors"] == 0, got["errors"]
    seen = {int(k.split(" ")[1]) for k in got["statuses"]}
    assert seen <= {200, 206, 301, 304, 400, 404, 405, 413, 414, 416, 431, 501, 505}, got["statuses"]
    assert {200, 400} <= seen
    assert http.get("/small.txt")["status"] == 200   # and still serving
    assert "panic" not in vm.output()


# ---- many clients ----

def test_256_concurrent_64k_downloads_all_finish(lab: Lab, vm: Vm, files: Path) -> None:
    assert vm.ip
    got = lab.netns.python(static_clients.DOWNLOADS, vm.ip, "80", "256", "/f64k.bin", "60", timeout=240)
    assert got["errors"] == []
    assert got["statuses"] == [200]
    assert got["sha256"] == [sha((files / "f64k.bin").read_bytes())]
    print(f"256 x 64 KiB: median {got['median_s']:.2f} s, slowest {got['max_s']:.2f} s")


def test_clients_that_stop_reading_cannot_hold_every_stream(lab: Lab, vm: Vm) -> None:
    # 40 stalled downloads: more than the 16 streams the VM runs at once, so the fresh client queues
    # behind them. Streams whose client took nothing for 5 s are reset while others wait (the fresh
    # client waits two such rounds); without that it would wait for the idle timeout (75 s), beyond
    # the client's 60 s bound.
    assert vm.ip
    got = lab.netns.python(static_clients.SLOW_READERS, vm.ip, "80", "40", "60", timeout=120)
    assert got["done"], got
    assert (got["status"], got["len"]) == ("200", 65536)
    print(f"fresh 64 KiB download behind 40 stalled ones: {got['took']:.1f} s")


def under_attack(lab: Lab, vm: Vm, script: str, *args: str) -> tuple[list[dict], dict]:
    """As tests/unikernel/test_hostile.py does: a hostile_clients attack (bounded by 10 s, stopped once the
    probes are in), 3 fresh clients that must each get a 200 within 2 s while it runs; the probes and the
    attack's report."""
    attack = lab.netns.cmd(sys.executable, "-c", script, str(vm.ip), "80", "10", *args)
    probes, report = hostile_clients.under_attack(
        attack, lambda: lab.netns.python(hostile_clients.PROBE, str(vm.ip), "80", "3", "0.3", "2.0"), 10)
    assert [p["status"] for p in probes] == ["200"] * 3, (probes, vm.output()[-1500:])
    return probes, report


def test_fresh_clients_are_answered_during_256_concurrent_downloads(lab: Lab, files: Path) -> None:
    # 256 clients download 64 KiB over and over; a small file never waits behind their turn for a
    # staging buffer.
    target = boot_static(lab, "static-attacked", 104, files)
    size = (files / "f64k.bin").stat().st_size
    probes, downloads = under_attack(lab, target, hostile_clients.DOWNLOADS, "256", "/f64k.bin", str(size), "0")
    assert downloads["ok"] >= 256 and downloads["bad"] == 0, downloads
    assert downloads["digests"] == [sha((files / "f64k.bin").read_bytes())]
    print(f"probes {[p['s'] for p in probes]} s; {downloads['ok']} downloads")


def test_fresh_clients_are_answered_while_150_clients_pipeline_and_never_read(lab: Lab, files: Path) -> None:
    # Each sends 400 requests for a small file and reads none of the answers, which pile up in the
    # VM's send buffers.
    target = boot_static(lab, "static-noread", 106, files)
    probes, attack = under_attack(lab, target, hostile_clients.PIPELINE_NO_READ, "150", "400", "/small.txt")
    assert attack["conns"] == 150, attack
    print(f"probes {[p['s'] for p in probes]} s")


@pytest.mark.parametrize(("attack", "args"), [(hostile_clients.ONE_BYTE, ("4", "2")),
                                             (hostile_clients.SLOW_HEADERS, ("300", "0.25"))],
                         ids=["one-byte-segments", "300-slow-headers"])
def test_fresh_clients_are_answered_during_slow_request_attacks(lab: Lab, files: Path, attack: str,
                                                                 args: tuple[str, str]) -> None:
    target = boot_static(lab, f"static-slow-{len(lab.vms)}", 110 + len(lab.vms), files)
    under_attack(lab, target, attack, *args)


# ---- boot arguments ----

def test_share_tag_boot_argument(lab: Lab, files: Path) -> None:
    other = boot_static(lab, "static-tag", 101, files, extra="share_tag=site", tag="site")
    s = Session(lab, other)
    try:
        assert s.get("/data.json")["body"] == '{"ok": true}\n'
    finally:
        s.close()


def test_serves_on_the_microvm_machine(lab: Lab, files: Path) -> None:
    micro = boot_static(lab, "static-micro", 103, files, microvm=True)
    s = Session(lab, micro)
    try:
        assert s.get("/")["body"] == (files / "index.html").read_text()
        data = (files / "f64k.bin").read_bytes()
        assert s.get("/f64k.bin")["sha256"] == sha(data)
        r = s.get("/f64k.bin", headers="Range: bytes=-10\r\n")
        assert r["status"] == 206 and r["sha256"] == sha(data[-10:])
        assert s.get("/escape")["status"] == 404
    finally:
        s.close()


def test_runs_in_8_mib_of_guest_ram(lab: Lab, files: Path) -> None:
    small = boot_static(lab, "static-8m", 105, files, memory="8")
    s = Session(lab, small)
    try:
        assert s.get("/f64k.bin")["sha256"] == sha((files / "f64k.bin").read_bytes())
    finally:
        s.close()


def test_missing_share_stops_the_vm_with_an_error(lab: Lab, files: Path) -> None:
    bad = boot_static(lab, "static-bad", 102, files, extra="share_tag=absent", wait=False)
    assert bad.wait_exit(60) != 0
    assert "error: cannot mount the 9P share with tag absent" in bad.output()


def test_dates_are_http_dates(http: Session, files: Path) -> None:
    r = http.get("/data.json")
    assert r["headers"]["last-modified"] == formatdate(int((files / "data.json").stat().st_mtime), usegmt=True)
    sent = parsedate_to_datetime(r["headers"]["date"]).timestamp()
    assert abs(sent - time.time()) < 120   # the guest's RTC is the host's clock
