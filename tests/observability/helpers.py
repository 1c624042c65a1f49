"""Scraping a running ukproxy's /metrics and /status, and configs with a metrics listener of their own."""

from __future__ import annotations

import json
import math
import threading
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.core.test_tcp_proxy import tcp_config as core_tcp_config
from tests.running import exchange as exchange  # re-exported: these tests take their helpers from here
from tests.waiting import wait_until as wait_until


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


class Scrape:
    """One /metrics page, parsed by Prometheus's own text parser."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[str, list[Sample]] = defaultdict(list)
        for family in self.families.values():
            for s in family.samples:
                self.samples[s.name].append(s)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(s.value for s in self.samples.get(name, ()) if all(s.labels.get(k) == v for k, v in labels.items()))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.samples.get(name, ()) if label in s.labels}


def scrape(port: int) -> Scrape:
    status, body = get(port, "/metrics")
    assert status == 200
    return Scrape(body.decode())


def status(port: int) -> dict[str, Any]:
    code, body = get(port, "/status")
    assert code == 200
    return json.loads(body)


def histograms_consistent(page: Scrape) -> list[str]:
    """Every histogram series: cumulative buckets never decrease and +Inf equals _count. Returns the series checked."""
    checked = []
    for family in page.families.values():
        if family.type != "histogram":
            continue
        series: dict[tuple, dict[str, Any]] = defaultdict(lambda: {"buckets": []})
        for s in family.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, data in series.items():
            buckets = sorted(data["buckets"])
            counts = [n for _, n in buckets]
            assert counts == sorted(counts), f"{family.name}{key}: buckets decrease: {buckets}"
            assert buckets[-1][0] == math.inf, f"{family.name}{key}: no +Inf bucket"
            inf, count = buckets[-1][1], data["count"]
            assert inf == count, f"{family.name}{key}: +Inf {inf} != _count {count}"
            checked.append(f"{family.name}{dict(key)}")
    return checked


def tcp_config(port: int, metrics_port: int, servers: list[int], workers: int = 2, extra: str = "",
               log: str = "", upstream_extra: str = "") -> str:
    """The core tests' tcp config with [log] settings and a metrics listener."""
    sections = f'{extra}\n[log]\n{log}\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"'
    return core_tcp_config(port, servers, workers, extra=sections, upstream_extra=upstream_extra)


class HttpBackend:
    """A threaded HTTP/1.1 backend: GET /status/<code> answers that code, anything else 200 with the path."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                code = int(self.path.split("?")[0].rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
                body = f"{self.path}\n".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
