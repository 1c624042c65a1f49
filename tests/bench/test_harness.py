"""Smoke tests of `python -m bench` itself: a tiny real run writes the table and JSON; a missing tool or a
failing client fails loudly. No speed assertions (docs/architecture.md, rule 6)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.clients import ClientFailed, run_parallel
from bench.runner import ScenarioFailed, throughput
from bench.scenarios import Scenario, run_wrk
from bench.settings import QUICK

REPO = Path(__file__).resolve().parent.parent.parent
TOOLS = all(shutil.which(t) for t in ("wrk", "ab", "nginx"))


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_missing_tool_fails_loudly(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # nothing on PATH: wrk, ab and nginx are all missing
    p = bench("--quick", "--only", "native", "--out", str(tmp_path / "out"), env=env)
    assert p.returncode == 2
    assert "missing tool(s): wrk, ab, nginx" in p.stderr
    assert not (tmp_path / "out" / "latest.md").exists()


def test_unknown_suite_is_refused(tmp_path: Path) -> None:
    p = bench("--only", "nope", "--out", str(tmp_path))
    assert p.returncode == 2 and "unknown suite" in p.stderr


def test_failing_client_is_an_error() -> None:
    with pytest.raises(ClientFailed, match="exited 3"):
        run_parallel([["sh", "-c", "echo boom; exit 3"]], timeout=10)
    with pytest.raises(ClientFailed, match="cannot run"):
        run_parallel([["no-such-client-binary"]], timeout=10)


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk not installed")
def test_nothing_listening_fails_the_run() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClientFailed, match="unable to connect"):
        run_wrk(Scenario("nobody", "native", "direct", "none", [f"http://127.0.0.1:{port}/"]), 2, 0.5)


def test_scenario_failure_names_the_scenario() -> None:
    s = Scenario("broken", "native", "direct", "none", ["http://127.0.0.1:1/"], prefix=["false"])
    with pytest.raises(ScenarioFailed, match="native/broken"):
        throughput("native", [s], QUICK, (1,), with_ab=False)


@pytest.mark.skipif(not TOOLS, reason="needs wrk, ab and nginx (`make deps`)")
def test_quick_run_with_one_tiny_scenario_writes_table_and_json(tmp_path: Path) -> None:
    p = bench("--quick", "--only", "native", "--scenarios", "direct", "--connections", "2", "--seconds", "0.5",
              "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "latest.md").read_text()
    assert "| direct |" in md and "req/s" in md
    run = json.loads((tmp_path / "latest.json").read_text())
    assert {"cpu_model", "cores", "python", "uvloop", "nginx", "qemu", "wrk"} <= set(run["machine"])
    clients = {(r["scenario"], r["client"]) for r in run["records"]}
    assert clients == {("direct", "wrk"), ("direct", "ab -k"), ("direct", "ab")}
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in run["records"])
