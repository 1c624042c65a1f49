"""Header rules per route, both ways, with curl through a real ukproxy to a real backend; bad rules refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.rules_proxy import CHECK_BASE, curl, serve_edge
from tests.running import ukproxy_check

RULES = """
[[route]]
prefix = "/headers"
upstream = "app"
[route.request_headers]
remove = ["Cookie"]
add = { X-Trace = "edge" }
[route.request_headers.set]
X-Client = "$remote_addr"
X-Forwarded-Proto = "https"
X-Optional = "$http_x_missing"
X-Where = "$host$uri?$args"
[route.response_headers]
remove = ["Server"]
set = { Content-Type = "application/x-edge" }
add = { X-Frame-Options = "DENY", X-Id = "$request_id" }
[[route]]
host = "plain.test"
prefix = "/"
upstream = "app"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_edge(tmp_path_factory.mktemp("headers"), RULES)


def test_request_rules_remove_set_and_add(site: str) -> None:
    r = curl(f"{site}/headers?k=v", "-H", "Cookie: secret=1", "-H", "X-Client: forged", "-H", "X-Trace: client",
             "-H", "Host: shop.test:8080")
    assert r.status == 200
    assert r.upstream_headers("Cookie") == []  # removed
    assert r.upstream_headers("X-Client") == ["127.0.0.1"]  # set: the client's own line replaced
    assert r.upstream_headers("X-Trace") == ["client", "edge"]  # added after the client's
    assert r.upstream_headers("X-Forwarded-Proto") == ["https"]  # a rule overrides the proxy's own header
    assert r.upstream_headers("X-Where") == ["shop.test/headers?k=v"]
    assert r.upstream_headers("X-Optional") == []  # a value that renders empty is not sent
    assert r.upstream_headers("X-Forwarded-For") == ["127.0.0.1"]  # the proxy's own headers are still there


def test_response_rules_remove_set_and_add(site: str) -> None:
    r = curl(f"{site}/headers")
    assert r.status == 200
    assert r.header("Server") is None  # aiohttp's Server line is gone
    assert r.all("Content-Type") == ["application/x-edge"]
    assert r.header("X-Frame-Options") == "DENY"
    assert re.fullmatch(r"[0-9a-f]{32}", r.header("X-Id") or "")  # $request_id made for the rule
    assert r.json()["path"] == "/headers"  # the body passes untouched


def test_a_route_without_rules_forwards_as_ever(site: str) -> None:
    r = curl(f"{site}/headers", "-H", "Host: plain.test", "-H", "Cookie: secret=1", "-H", "X-Forwarded-For: 6.6.6.6")
    assert r.upstream_headers("Cookie") == ["secret=1"]
    assert r.upstream_headers("X-Forwarded-For") == ["6.6.6.6, 127.0.0.1"]  # nginx's $proxy_add_x_forwarded_for
    assert r.upstream_headers("X-Trace") == []
    assert r.header("Server") is not None and r.header("X-Frame-Options") is None


BAD_RULES = CHECK_BASE + """[[route]]
prefix = "/a"
upstream = "app"
[route.request_headers]
set = { X-A = "$nope", "Bad Name" = "x", Host = "ok" }
add = { Host = "two", Transfer-Encoding = "gzip" }
remove = ["Host"]
replace = []
always = true
[route.response_headers]
set = { X-B = "line\\nbreak" }
add = { Content-Length = "1" }
remove = "Server"
"""


def test_bad_header_rules_are_refused_with_file_key_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_RULES)
    out = ukproxy_check(path)
    assert out.returncode != 0
    expected = [
        "route[0].request_headers.set.X-A: unknown variable $nope",
        "route[0].request_headers.set.Bad Name: 'Bad Name' is not a header name",
        "route[0].request_headers.add.Host: Host can only be set",
        "route[0].request_headers.add.Transfer-Encoding: Transfer-Encoding: framing and hop-by-hop headers",
        "route[0].request_headers.remove: Host can only be set",
        "route[0].request_headers.replace: unknown key",
        "route[0].request_headers.always: always is for response_headers",
        "route[0].response_headers.set.X-B: 'line\\nbreak': CR, LF and NUL cannot be",
        "route[0].response_headers.add.Content-Length: Content-Length: framing and hop-by-hop headers",
        "route[0].response_headers.remove: expected an array",
    ]
    for line in expected:
        assert f"{path}: {line}" in out.stderr, (line, out.stderr)
    assert "Host = \"ok\"" not in out.stderr  # setting Host is allowed
