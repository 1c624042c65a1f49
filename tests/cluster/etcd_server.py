"""A real etcd-server for the cluster tests: its own ports and data directory, always stopped and removed."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.running import free_port
from tests.waiting import wait_until


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


class Etcd:
    def __init__(self, tmp: Path, host: str = "127.0.0.1"):
        self.host = host  # another address than loopback: start it from a thread in that address's namespace
        self.data_dir = tmp / "etcd-data"
        self.log_path = tmp / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def start(self) -> Etcd:
        peer = f"http://{self.host}:{self.peer_port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["etcd", "--name", "test", "--data-dir", str(self.data_dir),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(self.healthy, "etcd to answer", timeout=30, interval=0.1, context=self.log)
        return self

    def healthy(self) -> bool:
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(self.url + "/health", timeout=2) as r:
            return json.loads(r.read()).get("health") == "true"
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # a plain client of its JSON gateway, to see what the nodes wrote

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())

    def get_prefix(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every key under the prefix, with its JSON value and its lease."""
        answer = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        out = {}
        for kv in answer.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()[len(prefix):]
            out[key] = {"value": json.loads(base64.b64decode(kv.get("value", ""))), "lease": kv.get("lease")}
        return out

    def delete_all(self) -> None:
        """Every key gone (its history stays): an empty store for the next test of a module's etcd."""
        self.call("/v3/kv/deleterange", {"key": _b64("\0"), "range_end": _b64("\0")})

    def put(self, key: str, value: str) -> int:
        answer = self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])
