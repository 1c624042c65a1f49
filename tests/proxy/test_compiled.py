"""The request path runs compiled by mypyc or as its plain Python sources (`ukproxy.compiled`), all its
modules alike, and both give the same answers."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.proxy.clients import RawClient, get
from tests.running import REPO, RunningProxy
from ukproxy.compiled import PACKAGE_DIR, PURE_ENV, compiled_sources, stale

REPORT = "import ukproxy.compiled as c, ukproxy.proxy.http as h, ukproxy.upstream.server as s; " \
         "print(c.MODE); print(h.__file__); print(s.__file__)"


def imported(pure: bool) -> tuple[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    if pure:
        env[PURE_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", REPORT], env=env, cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    return out[0], out[1:]


def test_pure_python_on_request() -> None:
    mode, files = imported(pure=True)
    assert mode == f"pure Python ({PURE_ENV}=1)" or mode == "pure Python (not compiled)"
    assert all(f.endswith(".py") for f in files), files


def test_compiled_modules_load_together() -> None:
    if not compiled_sources(PACKAGE_DIR):
        pytest.skip("ukproxy is not compiled in this checkout (`make compiled` builds it)")
    mode, files = imported(pure=False)
    assert mode == "compiled (mypyc)"
    assert all(f.endswith(".so") for f in files), files


def test_a_source_edited_after_compiling_is_stale(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / "sub").mkdir()
    for rel in ("a", "sub/b"):
        (tmp_path / f"{rel}.py").write_text("")
        (tmp_path / f"{rel}{suffix}").write_bytes(b"")
    (tmp_path / "c.py").write_text("")  # not compiled: not listed
    os.utime(tmp_path / "a.py", (1000, 1000))
    os.utime(tmp_path / f"a{suffix}", (2000, 2000))
    os.utime(tmp_path / f"sub/b{suffix}", (2000, 2000))
    os.utime(tmp_path / "sub/b.py", (3000, 3000))  # edited after its extension was built
    modules = compiled_sources(tmp_path, "pkg")
    assert sorted(modules) == ["pkg.a", "pkg.sub.b"]
    assert stale(modules) == ["pkg.sub.b"]


def test_pure_python_proxy_serves_the_same(backends: Callable[..., object], http_proxy: Callable[..., tuple[
        RunningProxy, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_ENV, "1")  # inherited by the master and its workers
    backend = backends()
    proxy, port = http_proxy([backend.address])  # type: ignore[attr-defined]
    with RawClient(port) as client:
        for i in range(5):
            response = client.request(get(f"/p{i}"))
            assert (response.status, response.body) == (200, f"backend GET /p{i}".encode())
    assert f"request path: pure Python ({PURE_ENV}=1)" in proxy.log()
