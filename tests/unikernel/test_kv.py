"""kv, the RESP2 store: its Linux build (kv-server) and its unikernel image, driven by redis-cli.

The Linux build runs the same protocol, store and log code as the VM, so most behaviour is checked
there (fast); the VM tests check that the image serves the same and that its log on a 9P share
survives a SIGKILL.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.unikernel_harness import QEMU, UNIKERNELS
from tests.running import free_port
from tests.unikernel.lab import built as build_all
from tests.unikernel.lab import needs_qemu
from tests.waiting import wait_until

KV_SERVER = UNIKERNELS / "build" / "host" / "kv-server"
KV_IMAGE = UNIKERNELS / "build" / "kv.elf"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli (redis-tools) is not installed"),
]


class Kv:
    """A kv on a loopback port: the Linux build, or a VM behind QEMU's user networking."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port = argv, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Kv:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: self.cli("PING") == "PONG", timeout=60, what=f"kv on port {self.port} answers PING")
        return self

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=20)
        return (done.stdout + done.stderr).strip()

    def raw(self, payload: bytes, expect_close: bool = False) -> bytes:
        """Sends payload at once and reads until the server closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(payload)
            s.settimeout(2 if not expect_close else 10)
            chunks = []
            try:
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                if expect_close:
                    raise
            return b"".join(chunks)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def info(self) -> dict[str, str]:
        lines = self.cli("INFO").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def built() -> None:
    build_all()  # every image and the Linux builds (kv-server)


def native(data: Path, *extra: str) -> Kv:
    port = free_port()
    return Kv([str(KV_SERVER), "--port", str(port), "--dir", str(data), *extra], port)


def vm(share: Path, *extra: str) -> Kv:
    port = free_port()
    argv = [
        QEMU, "-accel", "tcg", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-m", "16",
        "-kernel", str(KV_IMAGE), "-append", f"ip=10.0.2.15/24 gw=10.0.2.2 port=6379 name=kv-t {' '.join(extra)}",
        "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:6379",
        "-device", "virtio-net-pci,netdev=n0,disable-modern=on,romfile=",
        "-fsdev", f"local,id=f0,path={share},security_model=none",
        "-device", "virtio-9p-pci,fsdev=f0,mount_tag=share,disable-modern=on",
    ]
    return Kv(argv, port)


@pytest.fixture
def kv(built: None, tmp_path: Path) -> Iterator[Kv]:
    server = native(tmp_path).start()
    yield server
    server.kill()


# ---- commands, as Redis answers them ----

ANSWERS = [
    (["SET", "a", "1"], "OK"),
    (["GET", "a"], "1"),
    (["INCR", "a"], "2"),
    (["INCRBY", "a", "-12"], "-10"),
    (["SET", "a", "x", "NX"], ""),
    (["SET", "new", "x", "XX"], ""),
    (["SET", "a", "y", "XX"], "OK"),
    (["GET", "a"], "y"),
    (["INCR", "a"], "ERR value is not an integer or out of range"),
    (["EXISTS", "a", "a", "none"], "2"),
    (["MGET", "a", "none", "a"], "y\n\ny"),
    (["TTL", "a"], "-1"),
    (["TTL", "none"], "-2"),
    (["EXPIRE", "a", "100"], "1"),
    (["TTL", "a"], "100"),
    (["SET", "e", "v", "EX", "0"], "ERR invalid expire time in 'set' command"),
    (["SET", "e", "v", "EX", "ten"], "ERR value is not an integer or out of range"),
    (["SET", "e", "v", "NX", "XX"], "ERR syntax error"),
    (["GET"], "ERR wrong number of arguments for 'get' command"),
    (["DEL", "a", "none"], "1"),
    (["DBSIZE"], "0"),
    (["SET", "big", "9223372036854775807"], "OK"),
    (["INCR", "big"], "ERR increment or decrement would overflow"),
    (["ECHO", "hi there"], "hi there"),
    (["PING", "x"], "x"),
    (["NOPE", "arg"], "ERR unknown command 'NOPE', with args beginning with: 'arg'"),
]


def test_commands_answer_as_redis_does(kv: Kv) -> None:
    assert [kv.cli(*command) for command, _ in ANSWERS] == [answer for _, answer in ANSWERS]


def test_px_expiry_removes_the_key(kv: Kv) -> None:
    assert kv.cli("SET", "k", "v", "PX", "200") == "OK"
    wait_until(lambda: kv.cli("EXISTS", "k") == "0", timeout=10, what="k expires")
    assert kv.cli("GET", "k") == ""


def test_pipelined_commands_are_answered_in_order(kv: Kv) -> None:
    commands = b"".join(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(500))
    replies = kv.raw(commands + b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n")
    assert replies == b"+OK\r\n" * 500 + b"$3\r\n499\r\n+PONG\r\n"


@pytest.mark.parametrize("payload", [b"*x\r\n", b"*1\r\n$-5\r\n", b"*1\r\n+PING\r\n", b"*1\r\n$4\r\nPINGxx"])
def test_protocol_errors_get_an_error_and_a_close(kv: Kv, payload: bytes) -> None:
    reply = kv.raw(payload, expect_close=True)
    assert reply.startswith(b"-ERR Protocol error"), reply
    assert kv.cli("PING") == "PONG"


def test_quit_answers_ok_and_closes(kv: Kv) -> None:
    assert kv.raw(b"QUIT\r\nPING\r\n", expect_close=True) == b"+OK\r\n"


def test_the_memory_limit_is_an_error_not_a_crash(built: None, tmp_path: Path) -> None:
    server = native(tmp_path, "--maxmemory", "100000").start()
    try:
        value = "v" * 1000
        answers = [server.cli("SET", f"key{i}", value) for i in range(150)]
        assert answers[0] == "OK"
        assert "OOM command not allowed when used memory > 'maxmemory'." in answers
        assert server.cli("GET", "key0") == value
        assert server.cli("DEL", "key0") == "1"
        assert server.cli("SET", "again", "x") == "OK"
    finally:
        server.kill()


# ---- durability ----

def test_acknowledged_writes_survive_a_sigkill(built: None, tmp_path: Path) -> None:
    server = native(tmp_path).start()
    for i in range(100):
        assert server.cli("SET", f"k{i}", str(i)) == "OK"
    assert server.cli("INCRBY", "n", "5") == "5"
    assert server.cli("SET", "soon", "gone", "PX", "300") == "OK"
    assert server.cli("SET", "later", "kept", "EX", "1000") == "OK"
    server.kill()
    again = native(tmp_path).start()
    try:
        assert [again.cli("GET", f"k{i}") for i in range(100)] == [str(i) for i in range(100)]
        assert again.cli("GET", "n") == "5"
        assert int(again.cli("TTL", "later")) > 900
        wait_until(lambda: again.cli("EXISTS", "soon") == "0", timeout=10, what="an expiry kept across the restart")
    finally:
        again.kill()


def test_a_torn_last_record_is_cut_off(built: None, tmp_path: Path) -> None:
    server = native(tmp_path).start()
    assert server.cli("SET", "whole", "yes") == "OK"
    server.kill()
    with open(tmp_path / "appendonly.aof", "ab") as log:
        log.write(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf")
    again = native(tmp_path).start()
    try:
        assert again.cli("GET", "whole") == "yes"
        assert again.cli("EXISTS", "half") == "0"
        assert again.cli("SET", "after", "1") == "OK"
        again.kill()
        third = native(tmp_path).start()
        assert (third.cli("GET", "whole"), third.cli("GET", "after")) == ("yes", "1")
        third.kill()
    finally:
        again.kill()


def test_the_log_is_compacted_when_it_grows(built: None, tmp_path: Path) -> None:
    server = native(tmp_path, "--appendfsync", "everysec").start()
    try:
        value = "x" * 2000
        script = b"".join(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$2000\r\n" + value.encode() + b"\r\n" for _ in range(1200))
        assert server.raw(script).count(b"+OK") == 1200
        wait_until(lambda: int(server.info().get("aof_rewrites", "0")) >= 1, timeout=20, what="a log rewrite")
        written = len(script)
        assert (tmp_path / "appendonly.aof").stat().st_size < written / 4
        assert server.cli("GET", "key") == value
    finally:
        server.kill()


# ---- the unikernel image ----

@pytest.mark.qemu
@needs_qemu
def test_the_vm_answers_redis_cli_and_keeps_its_writes_across_a_sigkill(built: None, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    first = vm(share).start()
    try:
        assert [first.cli(*command) for command, _ in ANSWERS] == [answer for _, answer in ANSWERS]
        for i in range(50):
            assert first.cli("SET", f"k{i}", str(i)) == "OK"
        assert first.cli("SET", "ttl", "v", "EX", "1000") == "OK"
    finally:
        first.kill()
    second = vm(share).start()
    try:
        assert [second.cli("GET", f"k{i}") for i in range(50)] == [str(i) for i in range(50)]
        assert int(second.cli("TTL", "ttl")) > 900
        assert second.info()["aof_enabled"] == "1"
    finally:
        second.kill()
