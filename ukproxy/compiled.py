"""Whether ukproxy runs its compiled request path (setup.py, mypyc) or the plain Python sources.

mypyc leaves an extension module beside each source it compiled. Python would load that extension
even after its source was edited, and mypyc's modules call one another natively, so they must load
all together or not at all. So at package import, `install` decides for all of them: when
UKPROXY_PURE_PYTHON=1 is set, or when any source differs from the one its extension was built from,
every compiled module is loaded from its source instead, and `MODE` says why.

"Differs" is by content, never by date: the build records the SHA-256 of each source it compiled
in RECORD beside the extensions (setup.py, `write_record`), and `install` hashes the sources again
(about a millisecond for all of them). A checkout, a formatter that rewrites nothing, or an install
from a wheel changes dates, not contents, and leaves the compiled form in use.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
PURE_ENV = "UKPROXY_PURE_PYTHON"
RECORD = "compiled_sources.sha256"  # beside the extensions, in the package directory: "<sha256>  <path>" lines

MODE = "pure Python (not compiled)"  # what `install` found: "compiled (mypyc)" or "pure Python (why)"


def compiled_sources(package_dir: Path, package: str = "ukproxy") -> dict[str, tuple[Path, Path]]:
    """Module name → (source, extension) for every source with an extension module beside it."""
    found: dict[str, tuple[Path, Path]] = {}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for extension in package_dir.rglob("*" + suffix):
            source = extension.with_name(extension.name[: -len(suffix)] + ".py")
            if source.exists():
                parts = source.relative_to(package_dir).with_suffix("").parts
                found[".".join((package, *parts))] = (source, extension)
    return found


def source_hash(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def write_record(package_dir: Path, sources: dict[str, str]) -> None:
    """Record what was compiled: `sources` maps a path relative to the package to its source's hash."""
    lines = "".join(f"{digest}  {path}\n" for path, digest in sorted(sources.items()))
    (package_dir / RECORD).write_text(lines)


def read_record(package_dir: Path) -> dict[str, str] | None:
    """Path relative to the package → hash of the source its extension was built from; None without a record."""
    try:
        text = (package_dir / RECORD).read_text()
    except OSError:
        return None
    return {path: digest for digest, _, path in (line.partition("  ") for line in text.splitlines()) if path}


def stale(modules: dict[str, tuple[Path, Path]], package_dir: Path) -> list[str]:
    """The modules whose source is not the one their extension was built from (all of them without a record),
    and the recorded sources whose extension has gone (the rest would call into it natively)."""
    record = read_record(package_dir) or {}
    present = {source.relative_to(package_dir).as_posix(): name for name, (source, _) in modules.items()}
    edited = [name for path, name in present.items()
              if path in record and record[path] != source_hash(package_dir / path)]
    unrecorded = [f"{name} (not built by the last build: remove its extension)"
                  for path, name in present.items() if path not in record]
    gone = [f"{path} (its extension is missing)" for path in record if path not in present]
    return sorted(edited) + sorted(unrecorded) + sorted(gone)


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules as their .py sources, ahead of the extension beside them."""

    def __init__(self, sources: dict[str, Path]):
        self.sources = sources

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source is not None else None


def install() -> None:
    global MODE
    modules = compiled_sources(PACKAGE_DIR)
    if not modules:
        return
    if os.environ.get(PURE_ENV) == "1":
        MODE = f"pure Python ({PURE_ENV}=1)"
    else:
        changed = stale(modules, PACKAGE_DIR)
        if not changed:
            MODE = "compiled (mypyc)"
            return
        if read_record(PACKAGE_DIR) is None:
            MODE = f"pure Python (no {RECORD} beside the extensions; run `make compiled`)"
        else:
            MODE = f"pure Python (edited since compiled: {', '.join(changed)}; run `make compiled`)"
    sys.meta_path.insert(0, _SourcesFirst({name: source for name, (source, _) in modules.items()}))
