"""Request ids end to end: made when absent (or kept from a trusted peer), sent upstream, written in the
access log (combined and JSON) and returned to the client; curl through a real ukproxy."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.rules_proxy import curl, edge_config, log_lines, start
from tests.proxy.backends import Backend
from tests.running import free_port
from ukproxy.access_log import AccessLog

TRUSTED = "127.0.0.2"
ID = re.compile(r"[0-9a-f]{32}")


class Site:
    def __init__(self, url: str, log: Path):
        self.url = url
        self.log = log


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("request_id")
    backend = Backend("app")
    log = tmp / "access.log"

    def config(ports: list[int]) -> str:
        return edge_config(ports[0], backend.address, log=log) + f"""
[real_ip]
trusted_proxies = ["{TRUSTED}/32"]
[request_id]
return_to_client = true
[[upstream]]
name = "dead"
servers = ["127.0.0.1:{free_port()}"]
tries = 1
[[route]]
prefix = "/gone"
return = 410
[[route]]
prefix = "/dead"
upstream = "dead"
[[route]]
prefix = "/denied"
upstream = "app"
access = ["deny all"]
"""

    proxy, ports = start(tmp, config, 1)
    yield Site(f"http://127.0.0.1:{ports[0]}", log)
    proxy.stop()
    backend.close()


def test_an_id_is_made_sent_upstream_logged_and_returned(site: Site) -> None:
    r = curl(f"{site.url}/headers?made")
    request_id = r.header("X-Request-ID") or ""
    assert ID.fullmatch(request_id)
    assert r.upstream_headers("X-Request-ID") == [request_id]
    [line] = log_lines(site.log, "/headers?made")
    assert line.endswith(f" request_id={request_id}")
    assert curl(f"{site.url}/headers").header("X-Request-ID") != request_id  # one per request


def test_the_id_is_in_the_json_log_too(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(str(tmp_path / "access.json"), json_lines=True, loop=loop)
        log.request("127.0.0.1:80", "app", 200, 0.001, 0.001, "127.0.0.1:81", "GET", "/", "127.0.0.1", 5,
                    "curl", None, "lb-42")
        log.request("127.0.0.1:80", "app", 200, 0.001, 0.001, "127.0.0.1:81", "GET", "/", "127.0.0.1", 5,
                    "curl", None)
        log.close()
    finally:
        loop.close()
    with_id, without = (json.loads(line) for line in (tmp_path / "access.json").read_text().splitlines())
    assert with_id["request_id"] == "lb-42" and "request_id" not in without


def test_a_trusted_peers_id_is_kept_anyone_elses_replaced(site: Site) -> None:
    kept = curl(f"{site.url}/headers?kept", "--interface", TRUSTED, "-H", "X-Request-ID: lb-42.a:b")
    assert kept.header("X-Request-ID") == "lb-42.a:b"
    assert kept.upstream_headers("X-Request-ID") == ["lb-42.a:b"]
    assert log_lines(site.log, "/headers?kept")[0].endswith(" request_id=lb-42.a:b")
    replaced = curl(f"{site.url}/headers", "-H", "X-Request-ID: forged")
    assert ID.fullmatch(replaced.header("X-Request-ID") or "")
    assert replaced.upstream_headers("X-Request-ID") == [replaced.header("X-Request-ID")]  # one line, not two
    odd = curl(f"{site.url}/headers", "--interface", TRUSTED, "-H", 'X-Request-ID: a" b')
    assert ID.fullmatch(odd.header("X-Request-ID") or "")  # not an id's shape: a new one, the log stays sound


def test_the_proxys_own_answers_carry_the_id(site: Site) -> None:
    r = curl(f"{site.url}/gone?x")
    assert r.status == 410 and ID.fullmatch(r.header("X-Request-ID") or "")
    assert log_lines(site.log, "/gone?x")[0].endswith(f" request_id={r.header('X-Request-ID')}")


def test_the_proxys_errors_carry_the_id(site: Site) -> None:
    r = curl(f"{site.url}/dead?x")  # nothing listens there: 502
    assert r.status == 502 and ID.fullmatch(r.header("X-Request-ID") or "")
    denied = curl(f"{site.url}/denied")  # access control's 403
    assert denied.status == 403 and ID.fullmatch(denied.header("X-Request-ID") or "")
    assert log_lines(site.log, "/dead?x")[0].endswith(f" request_id={r.header('X-Request-ID')}")
