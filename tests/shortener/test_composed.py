"""The link shortener as ukproxy composes it from conf/shortener.toml: static, api and kv unikernels on a
bridge, api reaching kv only through kv's service address. One master for the module (few VMs, quick)."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.fleet.conftest import assert_nothing_left, qemu_of
from tests.running import REPO, RunningProxy, free_port
from tests.shortener.programs import Program, build
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(300)]

CONFIG = REPO / "conf" / "shortener.toml"
KV_CPU = max(os.sched_getaffinity(0))  # the test pins kv here with [upstream.placement] cpus


class Shortener:
    def __init__(self, proxy: RunningProxy, web: int, kv: int, metrics: int, netns: str, data: Path) -> None:
        self.proxy, self.kv_port, self.metrics_port, self.netns, self.data = proxy, kv, metrics, netns, data
        self.web = Program([], web)

    def status(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/status", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def vms(self, upstream: str) -> list[dict[str, object]]:
        """The upstream's running VMs as the master's /status lists them (none while it starts)."""
        try:
            rows = self.status()["vms"]
        except OSError:
            return []
        return [vm for vm in rows if vm["upstream"] == upstream and vm["state"] == "running"]  # type: ignore[union-attr]

    def metric(self, name: str, label: str) -> float:
        """The sum of a family's series that carry `label` (e.g. 'upstream="kv"')."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return sum(float(line.split()[-1]) for line in r.read().decode().splitlines()
                       if line.startswith(name + "{") and label in line)

    def redis(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.kv_port), *args], capture_output=True, text=True,
                              timeout=20)
        return done.stdout.strip()

    def create(self, url: str) -> dict[str, str]:
        answer = self.web.create(url)
        assert answer.status == 201, (answer.status, answer.body)
        return answer.json()  # type: ignore[return-value]


def shortener_config(web: int, kv: int, metrics: int, netns: str, data: Path, logs: Path) -> str:
    """conf/shortener.toml with this test's ports, namespace, kv share and logs (and no pid_file line:
    RunningProxy writes its own), kv pinned, and api's crash test hook on."""
    text = CONFIG.read_text()
    for old, new in (('address = "127.0.0.1:8080"', f'address = "127.0.0.1:{web}"'),
                     ('address = "127.0.0.1:6379"', f'address = "127.0.0.1:{kv}"'),
                     ('listen = "127.0.0.1:9146"', f'listen = "127.0.0.1:{metrics}"'),
                     ('netns = "ukshort"', f'netns = "{netns}"'),
                     ('"run/shortener-kv"', f'"{data}"'),
                     ('"logs/shortener-access.log"', f'"{logs}"'),
                     ('pid_file = "run/shortener.pid"\n', ""),
                     ('"service=api kv_timeout_ms=1000"', '"service=api kv_timeout_ms=1000 crash_hook=yes"'),
                     ('queue_timeout = "5s"\n', f'queue_timeout = "5s"\n[upstream.placement]\ncpus = [{KV_CPU}]\n')):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def shortener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shortener]:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, bridges and TAPs")
    try:
        build()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    tmp = tmp_path_factory.mktemp("shortener")
    tmp.chmod(0o755)
    data = tmp / "kv"
    data.mkdir()
    os.chown(data, pwd.getpwnam("nobody").pw_uid, -1)  # QEMU writes it as the workers' user
    netns = f"ukt-short-{uuid.uuid4().hex[:6]}"
    web, kv, metrics = free_port(), free_port(), free_port()
    proxy = RunningProxy(tmp, shortener_config(web, kv, metrics, netns, data, tmp / "access.log"), "shortener")
    s = Shortener(proxy, web, kv, metrics, netns, data)
    try:
        proxy.start([web, kv])
        wait_until(lambda: [len(s.vms(u)) for u in ("static", "api", "kv")], "one VM of each service running",
                   accept=lambda n: min(n) >= 1, timeout=90, context=proxy.log)
        wait_until(lambda: s.web.alive_status("/"), "the page through ukproxy", accept=lambda c: c == 200,
                   timeout=60, context=proxy.log)
        yield s
    finally:
        proxy.stop()
        assert_nothing_left(netns)


def test_the_program_end_to_end(shortener: Shortener) -> None:
    page = shortener.web.request("GET", "/")
    assert page.status == 200 and b"<form" in page.body
    link = wait_until(lambda: shortener.web.create("https://example.org/a?b=1"), "a link created",
                      accept=lambda a: a.status == 201, timeout=30).json()
    code = link["code"]  # type: ignore[index]
    assert link["url"] == "https://example.org/a?b=1"  # type: ignore[index]
    for _ in range(2):
        hop = shortener.web.request("GET", f"/r/{code}")
        assert hop.status == 302 and hop.headers["Location"] == "https://example.org/a?b=1"
    info = shortener.web.request("GET", f"/api/links/{code}")
    assert info.status == 200 and info.json()["hits"] == 2  # type: ignore[index]
    assert shortener.web.request("GET", "/r/NOSUCH").status == 404
    # A redirect is one kv batch (GET and INCR): the hit counter it made for an unknown code is removed.
    wait_until(lambda: shortener.redis("EXISTS", "hits:NOSUCH"), "hits:NOSUCH removed", accept=lambda v: v == "0",
               timeout=10)
    assert shortener.web.request("GET", "/api/links/NOSUCH").status == 404
    bad = shortener.web.create("ftp://example.org/")
    assert bad.status == 400 and b"http" in bad.body
    assert shortener.web.create("https://e.org/" + "x" * 3000).status in (400, 413)


def test_redis_cli_reaches_kv_through_ukproxy(shortener: Shortener) -> None:
    assert shortener.redis("PING") == "PONG"
    assert shortener.redis("SET", "t:greeting", "hello") == "OK"
    assert shortener.redis("GET", "t:greeting") == "hello"
    assert shortener.redis("INCR", "t:n") == "1"
    assert int(shortener.redis("DBSIZE")) >= 2


def test_api_reaches_kv_through_its_service_address(shortener: Shortener) -> None:
    """The api VMs were told kv=10.77.0.1:6379, and that traffic is counted like any other (the access
    log has it once the sessions end: see the SIGKILL test)."""
    shortener.create("https://example.org/counted")
    api_qemu = [p for p in qemu_of(shortener.netns) if "service=api" in " ".join(p.cmdline())]
    assert api_qemu and all("kv=10.77.0.1:6379" in " ".join(p.cmdline()) for p in api_qemu)
    # api keeps its kv connection open: it shows as in flight to the kv VM (no redis-cli runs now).
    wait_until(lambda: shortener.metric("ukproxy_upstream_server_active", 'upstream="kv"'),
               "api's kv connection in flight to the kv VM", accept=lambda n: n > 0, timeout=30)


def kv_qemu(shortener: Shortener) -> psutil.Process:
    kv = shortener.vms("kv")
    assert len(kv) == 1, kv
    return psutil.Process(int(kv[0]["pid"]))  # type: ignore[call-overload]


def test_api_answers_503_while_kv_does_not(shortener: Shortener) -> None:
    vm = kv_qemu(shortener)
    vm.send_signal(signal.SIGSTOP)  # kv stops answering; api waits kv_timeout_ms (1 s) at most
    try:
        answer = shortener.web.create("https://example.org/while-down")
        assert answer.status == 503, (answer.status, answer.body)
    finally:
        vm.send_signal(signal.SIGCONT)
    wait_until(lambda: shortener.web.create("https://example.org/after").status, "api creating links again",
               accept=lambda s: s == 201, timeout=60)


def test_kv_sigkilled_comes_back_with_every_acknowledged_write(shortener: Shortener) -> None:
    links = [shortener.create(f"https://example.org/durable/{i}") for i in range(5)]
    assert shortener.redis("SET", "t:durable", "yes") == "OK"
    old = kv_qemu(shortener)
    old.kill()
    # The fleet replaces it (same share, so the same log), and the old one is gone first.
    replaced = wait_until(lambda: [vm["pid"] for vm in shortener.vms("kv")], "a new kv VM",
                          accept=lambda pids: len(pids) == 1 and pids[0] != old.pid, timeout=90,
                          context=shortener.proxy.log)
    assert replaced
    assert wait_until(lambda: shortener.redis("GET", "t:durable"), "kv answering again",
                      accept=lambda v: v == "yes", timeout=60) == "yes"
    for link in links:
        hop = wait_until(lambda link=link: shortener.web.request("GET", f"/r/{link['code']}"),
                         f"link {link['code']} through the new kv", accept=lambda a: a.status != 503, timeout=30)
        assert hop.status == 302 and hop.headers["Location"] == link["url"]
    assert (shortener.data / "appendonly.aof").stat().st_size > 0
    # The api VMs' sessions to the dead kv ended: logged like any client's, from their backend addresses.
    log_path = shortener.proxy.dir / "access.log"
    wait_until(lambda: re.findall(r'^10\.77\.0\.\d+ .*"TCP 10\.77\.0\.1:6379".*upstream="kv-\d+"',
                                  log_path.read_text(), re.M),
               "api -> kv sessions in the access log", timeout=30)


def test_kv_pool_is_never_shrunk(shortener: Shortener) -> None:
    """The stateful pool has no surplus loop: its one VM stays, whatever idle_timeout would say."""
    assert len(shortener.vms("kv")) == 1
    assert "stopping VM kv-" not in shortener.proxy.log()


def test_placement_follows_the_config_and_says_why(shortener: Shortener) -> None:
    """kv is pinned by hard affinity (cpus); api, placed after it, prefers kv's CPU (near = ["kv"])."""
    kv = shortener.vms("kv")[0]
    assert kv["cpu"] == KV_CPU
    rejected = kv["placement"]["rejected"]  # type: ignore[index]
    others = sorted(os.sched_getaffinity(0) - {KV_CPU})
    assert sorted(int(c) for c in rejected) == others
    assert all(r.startswith("RequiredCpuAffinity: ") for r in rejected.values())
    first_api = min(shortener.vms("api"), key=lambda vm: int(str(vm["id"]).rsplit("-", 1)[1]))
    scores = first_api["placement"]["scores"]  # type: ignore[index]
    assert {int(c): s["PreferredUpstreamAffinity"] for c, s in scores.items()} == {
        c: 100 if c == KV_CPU else 0 for c in sorted(os.sched_getaffinity(0))}
    text = shortener.proxy.cli("status").stdout
    assert "placement:" in text and f"{first_api['id']}: api -> cpu " in text


def test_a_request_that_crashes_api_takes_down_nothing_else(shortener: Shortener) -> None:
    """POST /api/crash (the crash test hook, on in this module's config) faults the api VM that takes it: its
    QEMU exits with the panic status, and the page and kv keep answering while the fleet boots another."""
    before = {vm["pid"] for vm in shortener.vms("api")}
    assert before
    crashed = shortener.web.request("POST", "/api/crash", b"", timeout=30)
    assert crashed.status == 502, (crashed.status, crashed.body)  # a POST is not retried on another VM
    pages: list[int] = []

    def replaced() -> bool:
        pages.append(shortener.web.request("GET", "/").status)
        now = {vm["pid"] for vm in shortener.vms("api")}
        # One api VM: a new one in its place. More: the pool (min 1) may keep the survivors only.
        return bool(now) and not now & before if len(before) == 1 else bool(before - now)

    wait_until(replaced, "the crashed api VM replaced", timeout=90, interval=0.1, context=shortener.proxy.log)
    assert pages and set(pages) == {200}, pages  # the page answered at every poll while api was replaced
    assert shortener.redis("PING") == "PONG"
    assert re.search(r"vm api-\d+: qemu pid \d+ exited \(exited with code 7\)", shortener.proxy.log())
    wait_until(lambda: shortener.web.create("https://example.org/after-crash").status, "api creating links again",
               accept=lambda s: s == 201, timeout=60)
