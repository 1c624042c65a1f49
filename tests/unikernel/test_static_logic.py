"""The static service's pure logic, compiled for the host with ASan/UBSan and driven line by line.

unikernels/services/static/host/driver.c wraps each module (path normalisation, dates, ETags,
conditionals, ranges, request heads); these tests feed it a traversal corpus and generated inputs and
compare with reference models written here from the RFCs.
"""

from __future__ import annotations

import calendar
import email.utils
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UNIKERNELS = Path(__file__).resolve().parents[2] / "unikernels"
SRC = UNIKERNELS / "services" / "static"
LIB = UNIKERNELS / "lib"
INCLUDE = UNIKERNELS / "include"
MODULES = ["share_path", "mime", "http_date", "validators", "range", "conditional"]
PATH_MAX = 1024

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


class Driver:
    """The host driver as a long-lived process: one command line in, one answer line out."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, *args: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(" ".join(args) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver died ({self.proc.wait()}) on {args!r}")
        return line.rstrip("\n")

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0   # ASan/UBSan findings make it exit non-zero


def x(data: bytes | str) -> str:
    return "x" + (data.encode("latin-1") if isinstance(data, str) else data).hex()


def unx(token: str) -> bytes | None:
    return None if token == "-" else bytes.fromhex(token[1:])


@pytest.fixture(scope="module")
def drv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    binary = tmp_path_factory.mktemp("static") / "host_driver"
    sources = [str(SRC / "host" / "driver.c"), str(LIB / "http_request.c")] + [str(SRC / f"{m}.c") for m in MODULES]
    proc = subprocess.run(
        ["gcc", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-iquote", str(INCLUDE), "-o", str(binary), *sources],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    d = Driver(binary)
    yield d
    d.close()


# ---- request path -> share path ----

def share_path(drv: Driver, target: bytes) -> tuple[int, bool, bytes]:
    status, slash, out = drv.ask("path", x(target)).split(" ")
    return int(status), slash == "1", unx(out) or b""


def reference_share_path(target: bytes) -> tuple[int, bool, bytes]:
    """The rules of share_path.c, restated: split on raw '/', decode each component, refuse, never resolve."""
    if not target.startswith(b"/"):
        return 400, False, b""
    if target == b"/":
        return 0, True, b""
    out = bytearray()
    parts = target[1:].split(b"/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        start = len(out)
        j = 0
        while j < len(part):
            ch = part[j]
            decoded = False
            if ch == ord("%"):
                hexdigits = part[j + 1:j + 3]
                if len(hexdigits) < 2 or not all(c in b"0123456789abcdefABCDEF" for c in hexdigits):
                    return 400, False, b""
                ch = int(hexdigits, 16)
                j += 2
                decoded = True
            if ch < 0x20 or ch == 0x7F:
                return 400, False, b""
            if ch == ord("\\") or (decoded and ch == ord("/")):
                return 404, False, b""
            if len(out) >= PATH_MAX:
                return 414, False, b""
            out.append(ch)
            j += 1
        name = bytes(out[start:])
        if not name:
            if last:
                if out:
                    out.pop()
                try:
                    out.decode("utf-8")
                except UnicodeDecodeError:
                    return 400, False, b""
                return 0, True, bytes(out)
            return 404, False, b""
        if len(name) > 255 or name in (b".", b".."):
            return 404, False, b""
        if last:
            break
        if len(out) >= PATH_MAX:
            return 414, False, b""
        out.append(ord("/"))
    try:
        out.decode("utf-8")   # Python's decoder refuses overlong forms, surrogates and > U+10FFFF
    except UnicodeDecodeError:
        return 400, False, b""
    return 0, False, bytes(out)


def assert_inside_share(out: bytes) -> None:
    assert not out.startswith(b"/")
    for name in out.split(b"/") if out else []:
        assert name not in (b"", b".", b"..")
        assert b"\\" not in name and all(c >= 0x20 and c != 0x7F for c in name)


TRAVERSAL = [
    b"/..", b"/../", b"/../etc/passwd", b"/a/../../etc/passwd", b"/a/..", b"/.", b"/./a", b"/a/./b",
    b"/%2e%2e/etc/passwd", b"/%2E%2E/etc/passwd", b"/.%2e/x", b"/%2e./x", b"/a/%2e%2e/%2e%2e/x", b"/%2e",
    b"/..%2fetc%2fpasswd", b"/%2f%2e%2e%2fetc", b"/a%2f..%2f..%2fb", b"/%2fetc/passwd", b"/a%2Fb",
    b"/..%5c..%5cwindows", b"/a\\..\\b", b"/\\etc", b"/%5c", b"/a%5Cb",
    b"/index.html%00.txt", b"/%00", b"/a%00/b", b"/%0a", b"/%0d%0aSet-Cookie:x", b"/%7f", b"/%1b[31m",
    b"//etc/passwd", b"///", b"/a//b", b"/a///", b"/%", b"/%2", b"/%zz", b"/%g0", b"/%%32%65", b"/%u002e%u002e",
    b"/%c0%ae%c0%ae/etc", b"/%c0%af", b"/%e0%80%ae", b"/%f0%80%80%ae", b"/%c1%9c", b"/%ed%a0%80",
    b"/%f4%90%80%80", b"/%80", b"/%ff", b"/%c3", b"etc/passwd", b"", b"http://evil/etc/passwd",
    b"/" + b"a" * 256, b"/" + b"a/" * 600, b"/" + b"%41" * 1100,
]


def test_traversal_corpus_never_leaves_the_share(drv: Driver) -> None:
    for target in TRAVERSAL:
        status, _, out = share_path(drv, target)
        assert status in (400, 404, 414), (target, status, out)
        assert (status, out) == reference_share_path(target)[::2], target


@pytest.mark.parametrize(("target", "expected"), [
    (b"/", (0, True, b"")),
    (b"/index.html", (0, False, b"index.html")),
    (b"/docs/", (0, True, b"docs")),
    (b"/docs/a%20b.txt", (0, False, b"docs/a b.txt")),
    (b"/a%2eb", (0, False, b"a.b")),             # an encoded dot inside a name is just a dot
    (b"/...", (0, False, b"...")),              # not a dot segment
    (b"/.well-known/x", (0, False, b".well-known/x")),
    (b"/%25", (0, False, b"%")),                  # decoded once only: "%252e" is the name "%2e"
    (b"/%252e%252e", (0, False, b"%2e%2e")),
    (b"/caf%C3%A9", (0, False, "café".encode())),
    (b"/" + b"a" * 255, (0, False, b"a" * 255)),
])
def test_plain_paths_decode(drv: Driver, target: bytes, expected: tuple[int, bool, bytes]) -> None:
    assert share_path(drv, target) == expected


PIECES = ["/", "/", "a", "b.txt", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%00", "%", "%2", "%zz",
          "%c0%ae", "%c3%a9", "%e2%82%ac", "%ed%a0%80", "%f0%9f%98%80", "%41", "%25", "~", "%0a", "%7f", "é"]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.binary(max_size=8))
def test_generated_paths_match_the_reference(drv: Driver, pieces: list[str], tail: bytes) -> None:
    target = b"/" + "".join(pieces).encode() + tail.translate(None, b"\0\n ")   # a C string: no raw NUL
    got = share_path(drv, target)
    assert got == reference_share_path(target), target
    if got[0] == 0:
        assert_inside_share(got[2])


# ---- Content-Type ----

@pytest.mark.parametrize(("name", "ctype"), [
    ("index.html", "text/html; charset=utf-8"), ("a/b.HTM", "text/html; charset=utf-8"),
    ("s.css", "text/css; charset=utf-8"), ("app.js", "text/javascript; charset=utf-8"),
    ("d.json", "application/json"), ("i.svg", "image/svg+xml"), ("i.png", "image/png"), ("i.JPG", "image/jpeg"),
    ("i.jpeg", "image/jpeg"), ("i.gif", "image/gif"), ("favicon.ico", "image/x-icon"),
    ("r.txt", "text/plain; charset=utf-8"), ("m.wasm", "application/wasm"), ("f.woff2", "font/woff2"),
    ("doc.pdf", "application/pdf"), ("archive.tar.gz", "application/octet-stream"),
    ("Makefile", "application/octet-stream"), ("dir.html/file", "application/octet-stream"),
    ("x.", "application/octet-stream"),
])
def test_content_type_by_extension(drv: Driver, name: str, ctype: str) -> None:
    assert drv.ask("mime", x(name)) == ctype


# ---- dates ----

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=253402300799))
def test_dates_format_and_parse_in_all_three_forms(drv: Driver, secs: int) -> None:
    imf = drv.ask("date_fmt", str(secs))
    assert imf == email.utils.formatdate(secs, usegmt=True)
    assert drv.ask("date_parse", x(imf)) == f"0 {secs}"
    g = time.gmtime(secs)
    asctime = time.strftime("%a %b ", g) + f"{g.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", g)
    assert drv.ask("date_parse", x(asctime)) == f"0 {secs}"
    if 1970 <= g.tm_year <= 2069:
        rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", g)
        assert drv.ask("date_parse", x(rfc850)) == f"0 {secs}"


@pytest.mark.parametrize("text", [
    "", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 29 Feb 1900 08:49:37 GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Xyz 1994 08:49:37 GMT",
    "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT", "Sunday, 06-Nov-1994 08:49:37 GMT",
    "Funday, 06-Nov-94 08:49:37 GMT", "Sun Nov 6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 GMT ",
    "Sun, 0a Nov 1994 08:49:37 GMT",
])
def test_bad_dates_are_refused(drv: Driver, text: str) -> None:
    assert drv.ask("date_parse", x(text)).startswith("-1 ")


def test_leap_day_parses(drv: Driver) -> None:
    assert drv.ask("date_parse", x("Tue, 29 Feb 2000 00:00:00 GMT")) == f"0 {calendar.timegm((2000, 2, 29, 0, 0, 0))}"


# ---- ETags and conditionals ----

def test_etag_changes_with_each_input(drv: Driver) -> None:
    base = drv.ask("etag", "7", "4096", "1700000000", "5")
    assert base == '"7-1000-6553f100.5"'
    for args in (("8", "4096", "1700000000", "5"), ("7", "4097", "1700000000", "5"),
                 ("7", "4096", "1700000001", "5"), ("7", "4096", "1700000000", "6")):
        assert drv.ask("etag", *args) != base
    biggest = drv.ask("etag", *[str(2**64 - 1)] * 3, str(2**32 - 1))
    assert len(biggest) < 64


ETAG = '"7-1000-6553f100.5"'


@pytest.mark.parametrize(("field", "matches"), [
    (ETAG, True), ("*", True), (" * ", True), (f"W/{ETAG}", True), (f'"x", {ETAG}', True), (f'"x" ,W/{ETAG} ,', True),
    ('"x"', False), ("", False), ('"7-1000-6553f100.6"', False), (ETAG[:-1], False), (f"{ETAG} junk", False),
    (f"*, {ETAG}", False), ("w/" + ETAG, False), ('"a b"', False), (ETAG.strip('"'), False),
])
def test_if_none_match(drv: Driver, field: str, matches: bool) -> None:
    assert drv.ask("inm", x(field), x(ETAG)) == str(int(matches))


@pytest.mark.parametrize(("field", "holds"), [
    (ETAG, True), (f"W/{ETAG}", False), ('"other"', False),
    (email.utils.formatdate(1700000000, usegmt=True), True), (email.utils.formatdate(1700000001, usegmt=True), False),
    ("garbage", False),
])
def test_if_range(drv: Driver, field: str, holds: bool) -> None:
    assert drv.ask("ifrange", x(field), x(ETAG), "1700000000") == str(int(holds))


# ---- Range ----

NONE, ONE, UNSAT = 0, 1, 2


def reference_range(field: str, size: int) -> tuple[int, int, int]:
    spec = field.strip(" \t")
    if spec[:5].lower() != "bytes":
        return NONE, 0, 0
    spec = spec[5:].lstrip(" \t")
    if not spec.startswith("="):
        return NONE, 0, 0
    spec = spec[1:].strip(" \t")
    first, dash, last = spec.partition("-")
    if not dash or not (first == "" or (first.isdigit() and first.isascii())) or \
            not (last == "" or (last.isdigit() and last.isascii())) or (not first and not last):
        return NONE, 0, 0
    if first:
        a = int(first)
        if last and int(last) < a:
            return NONE, 0, 0
        if a >= size:
            return UNSAT, 0, 0
        end = min(int(last), size - 1) if last else size - 1
        return ONE, a, end - a + 1
    n = int(last)
    if n == 0 or size == 0:
        return UNSAT, 0, 0
    n = min(n, size)
    return ONE, size - n, n


def ask_range(drv: Driver, field: str, size: int) -> tuple[int, int, int]:
    kind, start, length = map(int, drv.ask("range", str(size), x(field)).split())
    return (kind, start, length) if kind == ONE else (kind, 0, 0)


@pytest.mark.parametrize(("field", "size", "expected"), [
    ("bytes=0-99", 1000, (ONE, 0, 100)), ("bytes=100-", 1000, (ONE, 100, 900)), ("bytes=-10", 1000, (ONE, 990, 10)),
    ("bytes=-5000", 1000, (ONE, 0, 1000)), ("bytes=990-5000", 1000, (ONE, 990, 10)), ("BYTES = 1-1", 10, (ONE, 1, 1)),
    ("bytes=1000-", 1000, (UNSAT, 0, 0)), ("bytes=5000-6000", 1000, (UNSAT, 0, 0)), ("bytes=-0", 1000, (UNSAT, 0, 0)),
    ("bytes=0-", 0, (UNSAT, 0, 0)), ("bytes=-1", 0, (UNSAT, 0, 0)),
    ("bytes=5-1", 1000, (NONE, 0, 0)), ("bytes=0-1,5-6", 1000, (NONE, 0, 0)), ("items=0-1", 1000, (NONE, 0, 0)),
    ("bytes=", 1000, (NONE, 0, 0)), ("bytes=-", 1000, (NONE, 0, 0)), ("bytes=a-b", 1000, (NONE, 0, 0)),
    ("bytes=99999999999999999999999-", 1000, (UNSAT, 0, 0)), ("bytes=0-99999999999999999999999", 10, (ONE, 0, 10)),
])
def test_range_table(drv: Driver, field: str, size: int, expected: tuple[int, int, int]) -> None:
    assert ask_range(drv, field, size) == expected


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.from_regex(r"\A[ ]?(bytes|BYTES|byte)[ ]?=[ ]?[0-9]{0,4}-?[0-9]{0,4}(,[0-9]-)?[ ]?\Z"),
       st.integers(min_value=0, max_value=5000))
def test_generated_ranges_match_the_reference(drv: Driver, field: str, size: int) -> None:
    assert ask_range(drv, field, size) == reference_range(field, size)


# ---- request heads and the answer they get ----

def parse(drv: Driver, head: bytes) -> list[str]:
    return drv.ask("request", x(head)).split(" ")


def test_request_keeps_the_conditional_fields(drv: Driver) -> None:
    got = parse(drv, b"GET /a%20b/?q=1 HTTP/1.1\r\nHost: vm\r\nIf-None-Match: \"x\", W/\"y\"\r\n"
                     b"if-modified-since: Sun, 06 Nov 1994 08:49:37 GMT\r\nRange: bytes=0-1\r\nIf-Range: \"x\"\r\n\r\n")
    assert got[0] == "0"
    assert [unx(t) for t in got[1:4]] == [b"GET", b"/a%20b/", b"q=1"]
    assert got[4:7] == ["0", "1", "0"]
    assert [unx(t) for t in got[7:]] == [b'"x", W/"y"', b"Sun, 06 Nov 1994 08:49:37 GMT", b"bytes=0-1", b'"x"']


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", "400"),                                    # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n", "400"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n\r\n", "400"),
    (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
    (b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "501"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "400"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "400"),
    (b"GET /" + b"a" * 2048 + b" HTTP/1.1\r\nHost: a\r\n\r\n", "414"),
    (b"GET / HTTP/1.0\r\n\r\n", "0"),
])
def test_request_strictness(drv: Driver, head: bytes, status: str) -> None:
    assert parse(drv, head)[0] == status


MTIME = 1700000000


def answer(drv: Driver, fields: str, is_get: bool = True, size: int = 1000) -> tuple[int, int, int]:
    head = f"GET /f HTTP/1.1\r\nHost: vm\r\n{fields}\r\n".encode()
    st_, status, start, length = map(int, drv.ask("answer", x(head), str(int(is_get)), str(size), x(ETAG),
                                                  str(MTIME)).split())
    assert st_ == 0
    return status, start, length


def test_conditional_answers(drv: Driver) -> None:
    d = email.utils.formatdate
    assert answer(drv, "") == (200, 0, 1000)
    assert answer(drv, f"If-None-Match: {ETAG}\r\n")[0] == 304
    assert answer(drv, 'If-None-Match: "other"\r\n')[0] == 200
    assert answer(drv, f"If-Modified-Since: {d(MTIME, usegmt=True)}\r\n")[0] == 304
    assert answer(drv, f"If-Modified-Since: {d(MTIME + 60, usegmt=True)}\r\n")[0] == 304
    assert answer(drv, f"If-Modified-Since: {d(MTIME - 1, usegmt=True)}\r\n")[0] == 200
    assert answer(drv, "If-Modified-Since: garbage\r\n")[0] == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3)
    assert answer(drv, f'If-None-Match: "other"\r\nIf-Modified-Since: {d(MTIME, usegmt=True)}\r\n')[0] == 200
    assert answer(drv, "Range: bytes=10-19\r\n") == (206, 10, 10)
    assert answer(drv, "Range: bytes=10-19\r\n", is_get=False) == (200, 0, 1000)   # HEAD ignores Range
    assert answer(drv, "Range: bytes=2000-\r\n")[0] == 416
    assert answer(drv, f"Range: bytes=10-19\r\nIf-Range: {ETAG}\r\n") == (206, 10, 10)
    assert answer(drv, 'Range: bytes=10-19\r\nIf-Range: "old"\r\n') == (200, 0, 1000)
    assert answer(drv, f"Range: bytes=10-19\r\nIf-None-Match: {ETAG}\r\n")[0] == 304
