"""/status for people (ukproxy/status_page.py), rendered by headless Chromium against a real master.

The master runs two workers, a pool of real unikernel VMs (one per worker) with active health checks, and
a static upstream with checks of its own (one live server, one dead) on the host's loopback: with VMs the
workers live in the backend namespace, and that upstream is reached (and checked) from the host's
(ukproxy/upstream/host_servers.py). Chromium loads /status as a browser does; after its script ran (and
refreshed once), every figure the page shows from the JSON (`data-k`) must equal the same path in /status
JSON read at the same quiet moment, and a screenshot must show the page drawn.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fleet.conftest import IMAGE, assert_nothing_left, needs_vms
from tests.observability.helpers import HttpBackend
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
# Headless, and quiet on the network: nothing but the page it is given (loopback).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps", "--hide-scrollbars",
                  "--virtual-time-budget=2500"]
READY_GREEN = (0xC8, 0xF0, 0xC0)  # the page's colour for a ready worker, a running VM and a passing server


class Site:
    def __init__(self, port: int, static_port: int, metrics: int, dead: int, proxy: RunningProxy):
        self.port, self.static_port, self.metrics, self.dead, self.proxy = port, static_port, metrics, dead, proxy


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    needs_vms()
    if CHROMIUM is None:
        pytest.skip("chromium-headless-shell is missing: `make deps` installs it")
    assert IMAGE.exists(), "the unikernel images are built by `make unikernels`"
    netns = f"ukt-page-{uuid.uuid4().hex[:8]}"
    port, static_port, metrics, dead = free_port(), free_port(), free_port(), free_port()
    backend = HttpBackend()
    proxy = RunningProxy(tmp_path_factory.mktemp("status-page"), f"""
workers = 2
[network]
netns = "{netns}"
bridge = "ukpg{uuid.uuid4().hex[:6]}"
[metrics]
listen = "127.0.0.1:{metrics}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "web"
[[listen]]
address = "127.0.0.1:{static_port}"
protocol = "http"
upstream = "static"
[[upstream]]
name = "web"
connect_timeout = "2s"
[upstream.vm]
image = "{IMAGE}"
args = "service=httpd"
accel = "tcg"
boot_timeout = "20s"
[upstream.pool]
min = 1
max = 1
[upstream.health]
type = "http"
path = "/"
interval = "500ms"
timeout = "5s"
fails = 3
[[upstream]]
name = "static"
servers = ["127.0.0.1:{backend.port}", "127.0.0.1:{dead}"]
connect_timeout = "1s"
[upstream.health]
type = "http"
path = "/"
interval = "300ms"
timeout = "5s"
fails = 2
""")
    try:
        proxy.start([port, static_port, metrics], expect_workers=2)
        yield Site(port, static_port, metrics, dead, proxy)
    finally:
        proxy.stop()
        backend.close()
        assert_nothing_left(netns)


def fetch(port: int, path: str, accept: str | None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    if accept is not None:
        conn.putheader("Accept", accept)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type") or "", body


def status(site: Site) -> dict[str, Any]:
    code, _, body = fetch(site.metrics, "/status", "application/json")
    assert code == 200
    return json.loads(body)


def settled(site: Site, requests: int) -> dict[str, Any]:
    """/status once both VMs run and passed a check, the static servers were checked (the live one passes,
    the dead one fails), every request is counted, and two readings agree on all but what moves by itself."""
    def reading() -> dict[str, Any]:
        return status(site)

    def ready(s: dict[str, Any]) -> bool:
        return (len(s["vms"]) == 2 and all(vm["state"] == "running" and vm["health"] == "pass" for vm in s["vms"])
                and static_health(site, s) == {"live": "pass", "dead": "fail"}
                and s["requests"] == requests and s["active"] == 0)

    first = wait_until(reading, "2 running, checked VMs, checked static servers and every request counted",
                       accept=ready,
                       timeout=40, context=site.proxy.log)
    return wait_until(lambda: (first, reading()), "/status to hold still",
                      accept=lambda pair: _still(pair[0]) == _still(pair[1]), timeout=20)[1]


def static_health(site: Site, s: dict[str, Any]) -> dict[str, str | None]:
    rows = [row for u in s["upstreams"] if u["name"] == "static" for row in u["servers"]]
    return {"dead" if row["server"].endswith(f":{site.dead}") else "live": row["health"] for row in rows}


LIVE = {"uptime", "cpu_seconds", "last_health_check", "last_health_check_at"}


def _still(value: Any) -> Any:
    """`value` without the figures that move by themselves."""
    if isinstance(value, dict):
        return {k: _still(v) for k, v in value.items() if k not in LIVE}
    if isinstance(value, list):
        return [_still(v) for v in value]
    return value


class Figures(HTMLParser):
    """The text of every element marked data-k, data-live or id, by that mark."""

    def __init__(self) -> None:
        super().__init__()
        self.exact: dict[str, str] = {}
        self.live: dict[str, str] = {}
        self.by_id: dict[str, str] = {}
        self._open: list[tuple[dict[str, str], str] | None] = []
        self.body_attrs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body_attrs = named
        self._open.append((named, "") if {"data-k", "data-live", "id"} & named.keys() else None)

    def handle_data(self, data: str) -> None:
        for i, item in enumerate(self._open):
            if item is not None:
                self._open[i] = (item[0], item[1] + data)

    def handle_endtag(self, tag: str) -> None:
        if not self._open:
            return
        item = self._open.pop()
        if item is not None:
            attrs, text = item
            for mark, into in (("data-k", self.exact), ("data-live", self.live), ("id", self.by_id)):
                if mark in attrs:
                    into[attrs[mark]] = text.strip()


def at(document: Any, path: str) -> Any:
    for key in path.split("."):
        document = document[int(key)] if isinstance(document, list) else document[key]
    return document


def as_javascript_shows(value: Any) -> str:
    """String(value) in the page's script; null as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """One headless run, in a session of its own: past the bound its whole process group (renderer, zygote
    and the rest, which a kill of the main process would leave running) is killed."""
    assert CHROMIUM is not None
    argv = [CHROMIUM, *CHROMIUM_FLAGS, *args]
    browser = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = browser.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        raise
    return subprocess.CompletedProcess(argv, browser.returncode, out, err)


def test_status_is_json_for_scripts_and_a_page_for_browsers(site: Site) -> None:
    for accept in (None, "*/*", "application/json", "application/json, text/html"):
        code, ctype, body = fetch(site.metrics, "/status", accept)
        assert code == 200 and ctype.startswith("application/json"), accept
        assert "workers" in json.loads(body)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    code, ctype, body = fetch(site.metrics, "/status?refresh=5", browser)
    assert code == 200 and ctype.startswith("text/html")
    assert b"const REFRESH = 5;" in body and b'<script id="initial" type="application/json">{' in body


def test_page_in_chromium_shows_what_status_json_says(site: Site, tmp_path: Path) -> None:
    sent = 0
    for port in (site.port, site.static_port):
        for _ in range(5):
            code, _, _ = fetch(port, "/", None)
            assert code == 200
            sent += 1
    expected = settled(site, sent)

    url = f"http://127.0.0.1:{site.metrics}/status?refresh=1"
    dumped = chromium("--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    after = status(site)
    assert _still(after) == _still(expected), "the figures moved while the page was read"

    page = Figures()
    page.feed(dumped.stdout)
    assert "data-rendered" in page.body_attrs, "the page's script did not run"
    assert page.by_id.get("error") == "", page.by_id.get("error")
    # It refreshed itself from /status within the budget, so a rate could be made from two readings.
    assert page.by_id["request-rate"].replace(".", "", 1).isdigit(), page.by_id["request-rate"]

    for path, text in page.exact.items():
        assert text == as_javascript_shows(at(after, path)), f"{path}: page {text!r}, /status {at(after, path)!r}"
    for path in page.live:
        at(after, path)  # a live figure names a real place in the JSON too
    # Every row of the JSON is on the page: workers, VMs with their CPU and state, each server's health.
    for i, worker in enumerate(after["workers"]):
        assert page.exact[f"workers.{i}.pid"] == str(worker["pid"])
        assert page.exact[f"workers.{i}.state"] == "ready"
    assert len(after["vms"]) == 2
    for i, vm in enumerate(after["vms"]):
        assert page.exact[f"vms.{i}.cpu"] == str(vm["cpu"]) and page.exact[f"vms.{i}.state"] == "running"
        assert f"vms.{i}.cpu_seconds" in page.live
    assert [u["name"] for u in after["upstreams"]] == ["static", "web"]
    for i, u in enumerate(after["upstreams"]):
        assert page.exact[f"upstreams.{i}.name"] == u["name"]
        assert page.exact[f"upstreams.{i}.requests"] == "5"
        rows = [(page.exact[f"upstreams.{i}.servers.{j}.server"], page.exact[f"upstreams.{i}.servers.{j}.health"],
                 int(page.exact[f"upstreams.{i}.servers.{j}.requests"])) for j in range(len(u["servers"]))]
        health = {server: checked for server, checked, _ in rows}
        if u["name"] == "web":
            assert health == {vm["id"]: "pass" for vm in after["vms"]}
            assert sum(n for _, _, n in rows) == 5
        else:  # the dead server may have been tried before its checks took it out: a retry, not an answer
            dead = f"127.0.0.1:{site.dead}"
            assert health[dead] == "fail" and sorted(health.values()) == ["fail", "pass"]
            assert [n for server, _, n in rows if server != dead] == [5]
    assert page.exact["requests"] == str(sent)

    shot = tmp_path / "status.png"
    taken = chromium("--window-size=1280,900", f"--screenshot={shot}", url)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    drawn = {colour for _, colour in colours}
    assert len(drawn) > 20, "the screenshot is (nearly) blank"
    assert READY_GREEN in drawn, "no ready/running/pass cell was drawn"
