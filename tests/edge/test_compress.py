"""Response compression (ukproxy/edge/compress.py) through a real ukproxy, with real clients.

One master for the module, in front of a threaded backend that serves each case on its own path. curl
(--compressed) and Python's gzip and brotli decoders check that a compressed body is the original; the
cases nginx never compresses (HEAD, ranges, 204, 304, encoded, no-transform, unlisted or short types,
HTTP/1.0, proxied) come back byte for byte as the backend sent them.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import subprocess
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import brotli
import pytest

from tests.edge.rules_proxy import edge_config
from tests.h2.client import H2Client
from tests.running import RunningProxy, free_port, ukproxy_check

PAGE = "".join(f"<p>line {i}: the quick brown fox jumps over the lazy dog</p>\n" for i in range(800)).encode()
JSON = b'{"items": [' + b", ".join(b'{"id": %d, "name": "item"}' % i for i in range(500)) + b"]}"
PIECES = [PAGE[i:i + 4000] for i in range(0, len(PAGE), 4000)]


class Backend:
    """Each path one kind of response; /stream.html sends its second half only once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = self.path
                if path == "/empty":
                    self.send_response(204)
                    self.end_headers()
                elif path == "/chunked.html":
                    self._chunked("text/html", PIECES)
                elif path == "/stream.html":
                    self._stream()
                else:
                    self._whole(path)

            def _whole(self, path: str) -> None:
                status, ctype, body, extra = 200, "text/html; charset=utf-8", PAGE, {}
                if path == "/page.html":
                    extra = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
                    if self.headers.get("If-None-Match") == '"v1"':
                        self.send_response(304)
                        self.send_header("ETag", '"v1"')
                        self.end_headers()
                        return
                    ranged = self.headers.get("Range")
                    if ranged:
                        first, last = (int(n) for n in ranged.removeprefix("bytes=").split("-"))
                        status, body = 206, PAGE[first:last + 1]
                        extra["Content-Range"] = f"bytes {first}-{last}/{len(PAGE)}"
                elif path == "/data.json":
                    ctype, body = "application/json", JSON
                elif path == "/data.csv":
                    ctype = "text/csv"
                elif path == "/tiny.html":
                    body = b"<p>hi</p>"
                elif path == "/gzipped.html":
                    body, extra = gzip.compress(PAGE), {"Content-Encoding": "gzip"}
                elif path == "/notransform.html":
                    extra = {"Cache-Control": "public, no-transform"}
                elif path == "/identity.html":
                    extra = {"Content-Encoding": "identity"}
                elif path == "/vary.html":
                    extra = {"Vary": "Accept-Encoding"}
                elif path == "/error.html":
                    status = 500
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _chunked(self, ctype: str, pieces: list[bytes]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                first, second = PAGE[:1000], PAGE[1000:2000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
                self.wfile.flush()
                backend.release.wait(20)  # until the client has decoded the first half
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


GZIP = """gzip = true
gzip_types = ["application/json"]
gzip_min_length = 100"""


def config(port: int, h2port: int, backend: int) -> str:
    return edge_config(port, f"127.0.0.1:{backend}", listen=GZIP) + f"""
[[listen]]  # the same rules for HTTP/2 streams
address = "127.0.0.1:{h2port}"
protocol = "http"
upstream = "app"
http2 = true
{GZIP}
[[route]]
prefix = "/br"
strip_prefix = true
upstream = "app"
brotli = true
brotli_types = ["application/json"]
[[route]]
prefix = "/off"
strip_prefix = true
upstream = "app"
gzip = false
[[route]]
prefix = "/old"
strip_prefix = true
upstream = "app"
gzip_http_version = "1.0"
gzip_proxied = "any"
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def ports(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """The HTTP/1.1 listener's port and the http2 listener's."""
    port, h2port = free_port(), free_port()
    proxy = RunningProxy(tmp_path_factory.mktemp("compress"),
                         config(port, h2port, backend.port))
    proxy.start([port, h2port], expect_workers=1)
    yield port, h2port
    proxy.stop()


@pytest.fixture(scope="module")
def port(ports: tuple[int, int]) -> int:
    return ports[0]


@pytest.fixture(scope="module")
def h2port(ports: tuple[int, int]) -> int:
    return ports[1]


def get(port: int, path: str, accept: str | None = "gzip", method: str = "GET",
        headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.putrequest(method, path, skip_accept_encoding=True)
    sent = dict(headers or {})
    if accept is not None:
        sent["Accept-Encoding"] = accept
    for name, value in sent.items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    response.read_body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def body(response: http.client.HTTPResponse) -> bytes:
    return response.read_body  # type: ignore[attr-defined,no-any-return]


def curl(port: int, path: str, *args: str) -> tuple[dict[str, str], bytes, int]:
    """curl's headers (lower-cased names), its body as written, and the bytes it downloaded."""
    out = subprocess.run(["curl", "-sS", "-D", "/dev/stderr", "-w", "\n%{size_download}", *args,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=30, check=True)
    content, _, size = out.stdout.rpartition(b"\n")
    lines = out.stderr.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if ":" in line)}
    return headers, content, int(size)


@pytest.mark.parametrize(("path", "original"), [("/page.html", PAGE), ("/data.json", JSON), ("/chunked.html", PAGE)])
def test_curl_compressed_gets_the_original_back(port: int, path: str, original: bytes) -> None:
    headers, content, downloaded = curl(port, path, "--compressed")
    assert headers.get("content-encoding") == "gzip"
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert headers.get("vary") == "Accept-Encoding"
    assert content == original
    assert downloaded < len(original) / 4  # really compressed on the wire


@pytest.mark.parametrize(("path", "accept", "coding"), [
    ("/page.html", "gzip", "gzip"),
    ("/page.html", "x-gzip", "gzip"),
    ("/page.html", "deflate, gzip;q=0.5", "gzip"),
    ("/page.html", "*", "gzip"),
    ("/br/page.html", "gzip, deflate, br", "br"),  # a tie: brotli is preferred
    ("/br/data.json", "br", "br"),
    ("/br/page.html", "br;q=0.4, gzip;q=0.8", "gzip"),  # the client's preference wins
    ("/br/page.html", "br;q=0, *", "gzip"),
    ("/br/chunked.html", "*;q=0.3", "br"),
])
def test_python_decoders_get_the_original_back(port: int, path: str, accept: str, coding: str) -> None:
    response = get(port, path, accept)
    assert response.status == 200
    assert response.getheader("Content-Encoding") == coding
    decoded = brotli.decompress(body(response)) if coding == "br" else gzip.decompress(body(response))
    assert decoded == (JSON if path.endswith(".json") else PAGE)


@pytest.mark.parametrize(("path", "accept", "headers", "vary"), [
    ("/page.html", None, {}, True),  # no Accept-Encoding: identity, but the answer still varies by it
    ("/page.html", "identity", {}, True),
    ("/page.html", "gzip;q=0, br", {}, True),  # br is not on for this route
    ("/page.html", "compress, deflate", {}, True),
    ("/page.html", "gzip;q=x", {}, True),  # a q we cannot read is no consent
    ("/page.html", "gzip", {"Via": "1.1 cdn"}, True),  # gzip_proxied off
    ("/data.csv", "gzip", {}, False),  # type not listed
    ("/tiny.html", "gzip", {}, False),  # shorter than gzip_min_length
    ("/notransform.html", "gzip", {}, False),
    ("/error.html", "gzip", {}, False),  # nginx compresses 200, 403 and 404 only
    ("/off/page.html", "gzip", {}, False),  # the route turns it off
])
def test_not_compressed(port: int, path: str, accept: str | None, headers: dict[str, str], vary: bool) -> None:
    response = get(port, path, accept, headers=headers)
    assert response.getheader("Content-Encoding") is None
    assert response.getheader("Content-Length") == str(len(body(response)))
    assert body(response) == (b"<p>hi</p>" if path == "/tiny.html" else PAGE)
    assert (response.getheader("Vary") == "Accept-Encoding") is vary


def test_ranges_are_never_compressed(port: int) -> None:
    response = get(port, "/page.html", headers={"Range": "bytes=100-199"})
    assert response.status == 206
    assert response.getheader("Content-Encoding") is None
    assert body(response) == PAGE[100:200]


def test_bodyless_answers_are_never_compressed(port: int) -> None:
    head = get(port, "/page.html", method="HEAD")
    assert head.status == 200 and head.getheader("Content-Encoding") is None
    assert head.getheader("Content-Length") == str(len(PAGE)) and body(head) == b""
    not_modified = get(port, "/page.html", headers={"If-None-Match": '"v1"'})
    assert not_modified.status == 304 and not_modified.getheader("Content-Encoding") is None
    empty = get(port, "/empty")
    assert empty.status == 204 and empty.getheader("Content-Encoding") is None


def test_already_encoded_body_passes_as_it_is(port: int) -> None:
    response = get(port, "/gzipped.html", "gzip, br")
    assert response.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body(response)) == PAGE  # one layer of gzip, the backend's


def test_compressed_response_has_weak_etag_and_no_ranges(port: int) -> None:
    response = get(port, "/page.html")
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("ETag") == 'W/"v1"'
    assert response.getheader("Accept-Ranges") is None
    plain = get(port, "/page.html", "identity")
    assert plain.getheader("ETag") == '"v1"' and plain.getheader("Accept-Ranges") == "bytes"


def test_identity_coding_is_replaced_not_stacked(port: int) -> None:
    response = get(port, "/identity.html")
    assert response.headers.get_all("Content-Encoding") == ["gzip"]
    assert gzip.decompress(body(response)) == PAGE


def test_vary_is_not_repeated(port: int) -> None:
    response = get(port, "/vary.html")
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.headers.get_all("Vary") == ["Accept-Encoding"]


def test_http10_clients_only_where_configured(port: int) -> None:
    headers, content, _ = curl(port, "/page.html", "-0", "--compressed")
    assert "content-encoding" not in headers and content == PAGE  # gzip_http_version defaults to 1.1
    headers, content, downloaded = curl(port, "/old/page.html", "-0", "--compressed", "-H", "Via: 1.0 cache")
    assert headers.get("content-encoding") == "gzip" and content == PAGE
    assert "transfer-encoding" not in headers and headers.get("connection") == "close"  # ends with the connection
    assert downloaded < len(PAGE) / 4


def test_keep_alive_connection_carries_compressed_and_plain_answers(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    for path, accept in [("/page.html", "gzip"), ("/data.csv", "gzip"), ("/chunked.html", "gzip"),
                         ("/page.html", "identity"), ("/br/data.json", "br")] * 2:
        conn.request("GET", path, headers={"Accept-Encoding": accept})
        response = conn.getresponse()
        data = response.read()
        coding = response.getheader("Content-Encoding")
        if coding == "gzip":
            data = gzip.decompress(data)
        elif coding == "br":
            data = brotli.decompress(data)
        assert data == (JSON if path.endswith(".json") else PAGE), (path, accept)
        assert not response.will_close
    conn.close()


def test_compressed_stream_is_not_held_back(port: int, backend: Backend) -> None:
    """The first half reaches the client decodable while the backend still holds the second."""
    backend.release.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /stream.html HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += s.recv(65536)
        head, _, rest = received.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunks = _Dechunker(rest)
        decoded = b""
        while len(decoded) < 1000:
            decoded += decoder.decompress(chunks.next(s))
        assert decoded == PAGE[:1000]
        backend.release.set()
        while not chunks.ended:
            decoded += decoder.decompress(chunks.next(s))
        assert decoded == PAGE[:2000] and decoder.eof


class _Dechunker:
    """The payload of a chunked body as it arrives on a socket."""

    def __init__(self, buffered: bytes):
        self.buffer = buffered
        self.ended = False

    def next(self, s: socket.socket) -> bytes:
        while b"\r\n" not in self.buffer:
            self.buffer += s.recv(65536)
        size_line, _, rest = self.buffer.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += s.recv(65536)
        self.buffer = rest[size + 2:]
        self.ended = size == 0
        return rest[:size]


@pytest.mark.parametrize(("path", "accept", "coding", "original"), [
    ("/page.html", "gzip", "gzip", PAGE),
    ("/chunked.html", "gzip, br", "gzip", PAGE),  # br is not on for this route
    ("/data.json", "deflate, gzip;q=0.5", "gzip", JSON),
    ("/br/page.html", "gzip;q=0.5, br", "br", PAGE),
])
def test_h2_streams_compressed_and_decoded_by_curl(h2port: int, path: str, accept: str, coding: str,
                                                    original: bytes) -> None:
    headers, content, downloaded = curl(h2port, path, "--http2-prior-knowledge", "--compressed",
                                        "-H", f"Accept-Encoding: {accept}")
    assert headers.get("content-encoding") == coding
    assert "content-length" not in headers  # framed by DATA and END_STREAM
    assert headers.get("vary") == "Accept-Encoding"
    assert content == original
    assert downloaded < len(original) / 4


def test_nghttp_decodes_an_h2_stream_to_the_original(h2port: int) -> None:
    out = subprocess.run(["nghttp", "-v", "-H", "accept-encoding: gzip", f"http://127.0.0.1:{h2port}/page.html"],
                         capture_output=True, timeout=30, check=True).stdout
    assert b"content-encoding: gzip" in out and b"content-length" not in out.split(b"END_STREAM")[0].lower()
    assert out.count(PAGE) == 1  # nghttp writes the body it decoded (gzip) among its frame log


def test_h2_streams_keep_the_rules_of_what_is_never_compressed(h2port: int) -> None:
    client = H2Client(h2port)
    try:
        gz = [(b"accept-encoding", b"gzip")]
        cases = {
            "head": client.get("/page.html", method="HEAD", headers=gz),
            "range": client.get("/page.html", headers=[*gz, (b"range", b"bytes=100-199")]),
            "not modified": client.get("/page.html", headers=[*gz, (b"if-none-match", b'"v1"')]),
            "no-transform": client.get("/notransform.html", headers=gz),
            "refused": client.get("/page.html", headers=[(b"accept-encoding", b"gzip;q=0, identity")]),
            "encoded": client.get("/gzipped.html", headers=[(b"accept-encoding", b"gzip, br")]),
        }
        for name, result in cases.items():
            assert result.headers.get(b"content-encoding") != b"gzip" or name == "encoded", name
        assert cases["head"].headers[b":status"] == b"200" and cases["head"].body == b""
        assert cases["range"].headers[b":status"] == b"206" and bytes(cases["range"].body) == PAGE[100:200]
        assert cases["not modified"].headers[b":status"] == b"304"
        assert bytes(cases["no-transform"].body) == PAGE
        refused = cases["refused"]
        assert bytes(refused.body) == PAGE and refused.headers[b"content-length"] == str(len(PAGE)).encode()
        assert refused.headers[b"vary"] == b"Accept-Encoding"  # it could have been compressed
        assert gzip.decompress(bytes(cases["encoded"].body)) == PAGE  # the backend's one layer, not two
    finally:
        client.close()


def test_compressed_h2_stream_is_not_held_back(h2port: int, backend: Backend) -> None:
    """The first half reaches the HTTP/2 client decodable while the backend still holds the second."""
    backend.release.clear()
    client = H2Client(h2port)
    try:
        stream_id = client.request("/stream.html", headers=[(b"accept-encoding", b"gzip")])
        result = client.streams[stream_id]

        def decoded() -> bytes:  # what the gzip stream received so far decodes to (each read is flushed)
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(result.body))

        client.until(lambda: len(decoded()) >= 1000, "the first half, decodable")
        assert decoded() == PAGE[:1000]
        assert result.headers[b"content-encoding"] == b"gzip" and not result.ended
        backend.release.set()
        client.until(lambda: result.ended, "the end of the stream")
        assert gzip.decompress(bytes(result.body)) == PAGE[:2000]
    finally:
        client.close()


def test_check_refuses_bad_compression_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("""
[http]
gzip_types = ["text/plain", "not a type"]
[[listen]]
address = "127.0.0.1:1"
upstream = "u"
gzip = true
[[listen]]
address = "127.0.0.1:2"
protocol = "http"
upstream = "u"
gzip_comp_level = 10
gzip_proxied = "expired"
[[route]]
upstream = "u"
brotli_comp_level = 12
gzip_http_version = "2.0"
gzip_min_length = "lots"
[[upstream]]
name = "u"
servers = ["127.0.0.1:3"]
""")
    out = ukproxy_check(bad)
    assert out.returncode != 0
    for key, reason in [("http.gzip_types", "item 1: expected a media type"),
                        ("listen[0].gzip", 'compression needs protocol = "http"'),
                        ("listen[1].gzip_comp_level", "at most 9"),
                        ("listen[1].gzip_proxied", "nginx's finer conditions"),
                        ("route[0].brotli_comp_level", "at most 11"),
                        ("route[0].gzip_http_version", "must be one of '1.0', '1.1'"),
                        ("route[0].gzip_min_length", "expected a size")]:
        assert f"{bad}: {key}: " in out.stderr and reason in out.stderr.split(f"{bad}: {key}: ", 1)[1].split("\n")[0]
