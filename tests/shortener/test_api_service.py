"""The api unikernel with a kv unikernel behind it: api reaches kv only through the address on its command
line (here the host's loopback through QEMU's user networking; under ukproxy, a service address), and
answers 503 at once when kv is gone, recovering when it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.unikernel_harness import qemu_available
from tests.running import free_port
from tests.shortener.programs import Program, build, vm_argv
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 is not installed"),
]


class Pair:
    def __init__(self, share: Path) -> None:
        self.share = share
        self.kv_port, api_port = free_port(), free_port()
        self.kv: Program | None = None
        self.api = Program(vm_argv("api.elf", f"port=80 name=api-t kv=10.0.2.2:{self.kv_port}",
                                   f"tcp:127.0.0.1:{api_port}-:80"), api_port)

    def start_kv(self) -> None:
        self.kv = Program(vm_argv("kv.elf", "port=6379 name=kv-t", f"tcp:127.0.0.1:{self.kv_port}-:6379",
                                  self.share), self.kv_port).launch()

    def stop(self) -> None:
        self.api.stop()
        if self.kv:
            self.kv.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    try:
        build()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    share = tmp_path / "kv"
    share.mkdir()
    p = Pair(share)
    try:
        p.start_kv()
        p.api.start()
        yield p
    finally:
        p.stop()


def created(api: Program, url: str) -> dict[str, object]:
    """Creates a link, retrying while kv is still booting (api says 503 until it answers)."""
    answer = wait_until(lambda: api.create(url), f"a link for {url}", accept=lambda a: a.status == 201, timeout=60)
    link = answer.json()
    assert isinstance(link, dict)
    return link


def test_links_through_the_api_and_kv_unikernels(pair: Pair) -> None:
    link = created(pair.api, "https://example.com/split")
    redirect = pair.api.request("GET", f"/r/{link['code']}")
    assert (redirect.status, redirect.headers["Location"]) == (302, "https://example.com/split")
    info = pair.api.request("GET", f"/api/links/{link['code']}").json()
    assert isinstance(info, dict) and info["hits"] == 1
    assert pair.api.request("GET", "/api/links/zzzzzz").status == 404
    assert pair.api.request("POST", "/api/crash", b"").status == 404  # the crash test hook is off by default
    assert pair.api.request("POST", "/api/links", b'{"url":"ftp://x"}', "application/json").status == 400


def test_api_answers_503_while_kv_is_gone_and_recovers(pair: Pair) -> None:
    link = created(pair.api, "https://example.com/before")
    assert pair.kv is not None
    pair.kv.stop()
    down = pair.api.request("GET", f"/r/{link['code']}", timeout=10)
    assert (down.status, down.json()) == (503, {"error": "the key-value store is not answering"})
    assert pair.api.create("https://example.com/during").status == 503
    pair.start_kv()
    after = created(pair.api, "https://example.com/after")
    assert after["code"] != link["code"]
    assert pair.api.request("GET", f"/r/{link['code']}").status == 302   # kv's log kept the first link
