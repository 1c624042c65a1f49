"""Return and rewrite rules (nginx's `return` and `rewrite`) with curl through a real ukproxy; bad rules refused."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.rules_proxy import CHECK_BASE, curl, serve_edge
from ukproxy.config import ConfigError, loads

RULES = """
[[route]]
prefix = "/old"
upstream = "app"
rewrite = [{ regex = "^/old/(\\\\w+)/(\\\\w+)$", replacement = "/new/$2/$1", flag = "permanent" }]
[[route]]
prefix = "/moved"
upstream = "app"
rewrite = [{ prefix = "/moved", replacement = "/here", flag = "redirect", status = 307 },]
[[route]]
prefix = "/v1"
upstream = "app"
rewrite = [{ prefix = "/v1", replacement = "/v2" }]
[[route]]
prefix = "/alias"
upstream = "app"
rewrite = [{ regex = "^/alias/(.*)", replacement = "/v1/$1", flag = "last" }]
[[route]]
prefix = "/loop"
upstream = "app"
rewrite = [{ prefix = "/loop", replacement = "/loop", flag = "last" }]
[[route]]
prefix = "/away"
upstream = "app"
rewrite = [{ regex = "^/away/(.*)", replacement = "https://elsewhere.test/$1?" }]
[[route]]
host = "old.test"
return = { status = 308, location = "https://new.test$request_uri" }
[[route]]
prefix = "/private"
return = { status = 403, body = "not for $remote_addr\\n" }
[[route]]
prefix = "/ping"
return = 204
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_edge(tmp_path_factory.mktemp("rewrite"), RULES)


def test_regex_rewrite_to_a_permanent_redirect_keeps_the_query(site: str) -> None:
    r = curl(f"{site}/old/a/b?q=1")
    assert (r.status, r.header("Location")) == (301, "/new/b/a?q=1")
    assert curl(f"{site}/old/a").status == 200  # no match: on to the upstream as it is


def test_prefix_rewrite_to_a_307(site: str) -> None:
    r = curl(f"{site}/moved/x/y")
    assert (r.status, r.header("Location")) == (307, "/here/x/y")


def test_prefix_rewrite_goes_upstream_with_the_new_path(site: str) -> None:
    r = curl(f"{site}/v1/items?k=v")
    assert (r.status, r.body) == (200, b"app GET /v2/items?k=v")
    assert curl(f"{site}/v1x").body == b"app GET /v1x"  # a prefix matches whole path segments


def test_last_routes_the_new_path_again(site: str) -> None:
    r = curl(f"{site}/alias/items")
    assert (r.status, r.body) == (200, b"app GET /v2/items")  # /alias -> /v1 (last) -> /v2 (the /v1 route's)


def test_a_rewrite_cycle_ends_in_500(site: str) -> None:
    assert curl(f"{site}/loop/x").status == 500


def test_a_replacement_url_redirects_and_a_trailing_question_mark_drops_the_query(site: str) -> None:
    r = curl(f"{site}/away/p?secret=1")
    assert (r.status, r.header("Location")) == (302, "https://elsewhere.test/p")


def test_return_redirect_keeps_the_path(site: str) -> None:
    r = curl(f"{site}/some/where?x=1", "-H", "Host: old.test")
    assert (r.status, r.header("Location")) == (308, "https://new.test/some/where?x=1")


def test_return_with_a_body_and_head(site: str) -> None:
    r = curl(f"{site}/private/file")
    assert (r.status, r.body, r.header("Content-Type")) == (403, b"not for 127.0.0.1\n", "text/plain")
    head = curl(f"{site}/private/file", "-I")
    assert (head.status, head.header("Content-Length"), head.body) == (403, "18", b"")
    ping = curl(f"{site}/ping")
    assert (ping.status, ping.body, ping.header("Content-Length")) == (204, b"", None)


def test_keep_alive_survives_a_return(site: str) -> None:
    port = int(site.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /private/a HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v1/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while data := s.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"\r\n\r\nnot for 127.0.0.1\nHTTP/1.1 200 OK\r\n" in received  # both, on one connection
    assert received.endswith(b"app GET /v2/b")


def _issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        loads(text, "bad.toml")
    return [f"{i.key}: {i.reason}" for i in e.value.issues]


def test_bad_rewrites_and_returns_are_refused(tmp_path: Path) -> None:
    issues = _issues(CHECK_BASE + """
[[route]]
prefix = "/a"
upstream = "app"
rewrite = [{ regex = "(", replacement = "/x" }, { regex = "^/(a)", replacement = "/$2" },
           { prefix = "a", replacement = "/b", flag = "odd" }, { replacement = "x" },
           { regex = "a", prefix = "/a", replacement = "/c", status = 301 },
           { prefix = "/a", replacement = "/b", flag = "redirect", status = 200 }]
[[route]]
prefix = "/b"
upstream = "app"
return = 301
[[route]]
prefix = "/c"
return = { status = 200, location = "/x" }
[[route]]
prefix = "/d"
return = { status = 302, location = "/x", body = "y" }
[[route]]
prefix = "/e"
""")
    for expected in [
        "route[0].rewrite[0].regex: not a regular expression",
        "route[0].rewrite[1].replacement: $2: the regex has 1 group(s)",
        "route[0].rewrite[2].prefix: must start with '/'",
        "route[0].rewrite[2].flag: must be one of 'break', 'last', 'redirect', 'permanent'",
        "route[0].rewrite[3].regex: a rewrite needs a regex or a prefix",
        "route[0].rewrite[3].replacement: a path must start with '/'",
        "route[0].rewrite[4].prefix: a rewrite has a regex or a prefix, not both",
        "route[0].rewrite[4].status: a status is for flag = \"redirect\" or \"permanent\"",
        "route[0].rewrite[5].status: a redirect is one of 301, 302, 303, 307, 308, got 200",
        "route[1].return.location: a 301 redirect needs a location",
        "route[1].return: a route with a return answers every request itself",
        "route[2].return.status: a location is for a redirect status",
        "route[3].return.body: a redirect has a location, not a body",
        "route[4].upstream: a route needs an upstream (or a return)",
    ]:
        assert any(issue.startswith(expected) for issue in issues), (expected, issues)
