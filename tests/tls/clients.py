"""Real TLS clients for the tests: openssl s_client and curl, run as subprocesses with a bound."""

from __future__ import annotations

import re
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

REQUEST = "GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@dataclass
class Handshake:
    output: str

    @property
    def done(self) -> bool:
        return "Cipher is (NONE)" not in self.output and bool(re.search(r"^(New|Reused), ", self.output, re.M))

    @property
    def reused(self) -> bool:
        return bool(re.search(r"^Reused, ", self.output, re.M))

    @property
    def subject(self) -> str:
        m = re.search(r"^subject=(.*)$", self.output, re.M)
        return m.group(1).strip() if m else ""

    @property
    def protocol(self) -> str:
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", self.output, re.M)
        return m.group(1) if m else ""

    @property
    def key_bits(self) -> str:
        m = re.search(r"^Server public key is (\d+) bit", self.output, re.M)
        return m.group(1) if m else ""


def s_client(port: int, ca: Path, *args: str, servername: str | None = "localhost", timeout: float = 15.0) -> Handshake:
    """One `openssl s_client` connection that sends a request and reads to the end (so TLS 1.3 tickets
    arrive before -sess_out saves the session)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca), "-ign_eof", *args]
    if servername is not None:
        command += ["-servername", servername]
    else:
        command.append("-noservername")
    run = subprocess.run(command, input=REQUEST, capture_output=True, text=True, timeout=timeout)
    return Handshake(run.stdout + run.stderr)


def curl(url: str, ca: Path, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--cacert", str(ca), "-D", "-", *args, url],
                          capture_output=True, text=True, timeout=timeout)


def client_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only the tests' CA (and checks the name)."""
    return ssl.create_default_context(cafile=str(ca))


def read_response(conn: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """One Content-Length response off `conn`: its head and its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"content-length"])
    while len(body) < length:
        body += conn.recv(65536)
    return head, body
