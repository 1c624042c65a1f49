"""Test certificates made with the openssl CLI: a CA, then leaf certificates signed by it (ECDSA P-256
or RSA 2048), each with its names as subjectAltName."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _key_args(kind: str) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else ["-newkey", "rsa:2048"]


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path


class Authority:
    """A self-signed CA in `folder`; `leaf()` issues server certificates."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cert = folder / "ca.pem"
        self.key = folder / "ca.key"
        folder.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", *_key_args("ec"), "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
                 "-days", "30", "-subj", "/CN=ukproxy test CA", cwd=folder)

    def leaf(self, name: str, names: list[str], kind: str = "ec", days: int = 30) -> Leaf:
        cert, key, csr = (self.folder / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
        ext = self.folder / f"{name}.ext"
        ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
        _openssl("req", *_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={names[0]}", cwd=self.folder)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext), cwd=self.folder)
        return Leaf(cert, key)
