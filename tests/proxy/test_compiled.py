"""The request path runs compiled by mypyc or as its plain Python sources (`ukproxy.compiled`), all its
modules alike, and both give the same answers."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.proxy.clients import RawClient, get
from tests.running import REPO, RunningProxy
from ukproxy.compiled import PACKAGE_DIR, PURE_ENV, RECORD, compiled_sources, source_hash, stale, write_record

# Where each module was found, without running the rest of the package (its imports need the runtime deps).
REPORT = "import importlib.util as u, ukproxy.compiled as c; print(c.MODE); " \
         "[print(u.find_spec(m).origin) for m in sorted(c.compiled_sources(c.PACKAGE_DIR))]"


def imported(pure: bool = False, cwd: Path = REPO, path: Path | None = None) -> tuple[str, list[str]]:
    """ukproxy's compiled.MODE and the file of each compiled module, as a fresh interpreter in `cwd` finds them."""
    env = {k: v for k, v in os.environ.items() if k not in (PURE_ENV, "PYTHONPATH")}
    if pure:
        env[PURE_ENV] = "1"
    if path is not None:
        env["PYTHONPATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", REPORT], env=env, cwd=cwd, capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    return out[0], out[1:]


def compiled_here() -> bool:
    return bool(compiled_sources(PACKAGE_DIR)) and imported()[0] == "compiled (mypyc)"


def test_pure_python_on_request() -> None:
    mode, files = imported(pure=True)
    assert mode == f"pure Python ({PURE_ENV}=1)" or mode == "pure Python (not compiled)"
    assert all(f.endswith(".py") for f in files), files


def test_compiled_modules_load_together() -> None:
    if not compiled_here():
        pytest.skip("ukproxy is not compiled from these sources (`make compiled` builds it)")
    mode, files = imported()
    assert mode == "compiled (mypyc)"
    assert len(files) > 10 and all(f.endswith(".so") for f in files), files


def test_native_modules_are_built_with_the_compiled_path() -> None:
    """Every C source in ukproxy/native is built wherever the request path is compiled: its own tests skip
    without it, so a build that silently dropped one (no libssl-dev) would otherwise go unseen."""
    if not compiled_here():
        pytest.skip("ukproxy is not compiled from these sources (`make compiled` builds it)")
    sources = sorted((PACKAGE_DIR / "native").glob("*.c"))
    assert sources
    for source in sources:  # imported directly: native.load would say None under UKPROXY_PURE_PYTHON=1
        assert importlib.import_module(f"ukproxy.native.{source.stem}"), source


def fake_build(root: Path, sources: dict[str, str]) -> dict[str, tuple[Path, Path]]:
    """Sources with an (empty) extension beside each and the record a build writes; what `install` would find."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for rel, text in sources.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        (root / rel).with_suffix(suffix).write_bytes(b"")
    write_record(root, {rel: source_hash(root / rel) for rel in sources})
    (root / "plain.py").write_text("")  # not compiled: not listed
    return compiled_sources(root, "pkg")


def test_staleness_is_by_content_never_by_date(tmp_path: Path) -> None:
    modules = fake_build(tmp_path, {"a.py": "A = 1\n", "sub/b.py": "B = 2\n"})
    assert sorted(modules) == ["pkg.a", "pkg.sub.b"]
    assert stale(modules, tmp_path) == []
    future = time.time() + 3600  # a checkout or a wheel install: every source newer than its extension
    for source, _ in modules.values():
        os.utime(source, (future, future))
    assert stale(modules, tmp_path) == []
    (tmp_path / "sub/b.py").write_text("B = 3\n")  # an edit
    assert stale(modules, tmp_path) == ["pkg.sub.b"]
    (tmp_path / "sub/b.py").write_text("B = 2\n")  # and its undoing
    assert stale(modules, tmp_path) == []


def test_without_a_record_or_with_an_extension_gone_nothing_is_current(tmp_path: Path) -> None:
    modules = fake_build(tmp_path, {"a.py": "A = 1\n", "b.py": "B = 2\n"})
    (tmp_path / RECORD).unlink()  # built before records existed, or the record was lost
    assert stale(modules, tmp_path) == [f"pkg.{m} (not built by the last build: remove its extension)" for m in "ab"]
    modules = fake_build(tmp_path, {"a.py": "A = 1\n", "b.py": "B = 2\n"})
    _, extension = modules.pop("pkg.b")
    extension.unlink()
    assert stale(compiled_sources(tmp_path, "pkg"), tmp_path) == ["b.py (its extension is missing)"]


def test_an_installed_copy_loads_compiled_until_a_source_is_edited(tmp_path: Path) -> None:
    # The built package copied elsewhere with fresh dates, as a wheel install leaves it: compiled, even
    # with every source touched; one source edited and every module loads from its source, all together.
    if not compiled_here():
        pytest.skip("ukproxy is not compiled from these sources (`make compiled` builds it)")
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "ukproxy", copy_function=shutil.copy, ignore=shutil.ignore_patterns(
        "__pycache__"))
    for runtime in REPO.glob("*__mypyc*"):  # mypyc's shared library, a top-level module
        shutil.copy(runtime, site)
    sources = [source for source, _ in compiled_sources(site / "ukproxy").values()]
    mode, files = imported(cwd=tmp_path, path=site)
    assert mode == "compiled (mypyc)" and all(f.startswith(str(site)) and f.endswith(".so") for f in files), files
    for source in sources:
        source.touch()
    assert imported(cwd=tmp_path, path=site)[0] == "compiled (mypyc)"
    group = site / "ukproxy/upstream/group.py"
    group.write_text(group.read_text() + "# edited\n")
    mode, files = imported(cwd=tmp_path, path=site)
    assert mode == "pure Python (edited since compiled: ukproxy.upstream.group; run `make compiled`)"
    assert len(files) == len(sources) and all(f.endswith(".py") for f in files), files


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
