"""The one-process original of the link shortener, driven over HTTP: the API's contract, the page, and
kv's log in its data folder. The same link logic and kv code run in the api and kv unikernels."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shortener.programs import SITE, Program, build, original


@pytest.fixture(scope="module")
def built() -> None:
    try:
        build()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def site(built: None, tmp_path: Path) -> Iterator[Program]:
    program = original(tmp_path).start()
    yield program
    program.stop()


def test_the_page_and_its_assets_are_served_from_the_folder(site: Program) -> None:
    page = site.request("GET", "/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.body == (SITE / "index.html").read_bytes()
    script = site.request("GET", "/app.js")
    assert (script.status, script.body) == (200, (SITE / "app.js").read_bytes())
    assert "javascript" in script.headers["Content-Type"]


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/x", "/a%2fb", "/nope.html"])
def test_paths_outside_the_folder_or_missing_are_not_found(site: Program, path: str) -> None:
    assert site.request("GET", path).status in (400, 404)


def test_create_get_redirect_and_hits(site: Program) -> None:
    created = site.create("https://example.com/a?b=1")
    assert created.status == 201
    link = created.json()
    assert isinstance(link, dict)
    assert link["url"] == "https://example.com/a?b=1"
    assert link["short"] == f"http://127.0.0.1:{site.port}/r/{link['code']}"
    info = site.request("GET", f"/api/links/{link['code']}").json()
    assert isinstance(info, dict)
    assert (info["url"], info["hits"]) == ("https://example.com/a?b=1", 0)
    redirect = site.request("GET", f"/r/{link['code']}")
    assert (redirect.status, redirect.headers["Location"]) == (302, "https://example.com/a?b=1")
    again = site.request("GET", f"/api/links/{link['code']}").json()
    assert isinstance(again, dict) and again["hits"] == 1


def test_a_form_creates_too(site: Program) -> None:
    created = site.request("POST", "/api/links", b"url=http%3A%2F%2Fexample.org%2Fx%3Fy%3D1",
                           "application/x-www-form-urlencoded")
    assert created.status == 201
    link = created.json()
    assert isinstance(link, dict) and link["url"] == "http://example.org/x?y=1"


def test_the_same_url_twice_gets_two_codes(site: Program) -> None:
    first, second = site.create("https://example.com/same"), site.create("https://example.com/same")
    assert first.status == second.status == 201
    assert first.json() != second.json()


@pytest.mark.parametrize(("body", "reason"), [
    ({"url": "ftp://example.com/"}, "url must start with http:// or https://"),
    ({"url": "https://" + "a" * 2100}, "url is longer than 2048 bytes"),
    ({"url": "https://exa mple.com/"}, "url contains spaces or control characters"),
    ({"url": "https:///path"}, "url has no host"),
    ({"link": "https://example.com/"}, "a url is required"),
])
def test_bad_urls_get_400_with_a_reason(site: Program, body: dict[str, str], reason: str) -> None:
    answer = site.request("POST", "/api/links", json.dumps(body).encode(), "application/json")
    assert (answer.status, answer.json()) == (400, {"error": reason})


def test_malformed_and_oversized_bodies(site: Program) -> None:
    assert site.request("POST", "/api/links", b'{"url":', "application/json").status == 400
    assert site.request("POST", "/api/links", b"{" + b" " * 5000 + b"}", "application/json").status == 413


def test_unknown_codes_are_404(site: Program) -> None:
    assert site.request("GET", "/api/links/zzzzzz").status == 404
    assert site.request("GET", "/r/zzzzzz").status == 404
    assert site.request("GET", "/r/bad*code").status == 404


def test_recent_lists_the_ten_newest_first(site: Program) -> None:
    codes = [site.create(f"https://example.com/{i}").json()["code"] for i in range(12)]  # type: ignore[index]
    recent = site.request("GET", "/api/links").json()
    assert isinstance(recent, list)
    assert [link["code"] for link in recent] == codes[::-1][:10]


def test_links_survive_a_restart_from_the_log(built: None, tmp_path: Path) -> None:
    first = original(tmp_path).start()
    code = first.create("https://example.com/kept").json()["code"]  # type: ignore[index]
    assert first.request("GET", f"/r/{code}").status == 302
    first.stop()
    second = original(tmp_path).start()
    try:
        info = second.request("GET", f"/api/links/{code}").json()
        assert isinstance(info, dict)
        assert (info["url"], info["hits"]) == ("https://example.com/kept", 1)
    finally:
        second.stop()


def test_one_crashing_request_takes_the_whole_original_down(built: None, tmp_path: Path) -> None:
    """The api code's crash test hook (--crash-hook, off by default): the page and kv live in the same
    process, so they go down with it (the split's counterpart is in test_composed)."""
    plain = original(tmp_path).start()
    try:
        assert plain.request("POST", "/api/crash").status == 405  # off: just a path that is not the API's
        assert plain.request("GET", "/").status == 200
    finally:
        plain.stop()
    hooked = original(tmp_path)
    hooked.argv.append("--crash-hook")
    hooked.start()
    try:
        with pytest.raises(OSError):  # the connection dies with the process: no answer at all
            hooked.request("POST", "/api/crash", b"")
        assert hooked.proc is not None and hooked.proc.wait(timeout=10) == -signal.SIGSEGV
        with pytest.raises(OSError):
            hooked.request("GET", "/", timeout=2)
    finally:
        hooked.stop()
