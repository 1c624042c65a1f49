"""Whether ukproxy runs its compiled request path (setup.py, mypyc) or the plain Python sources.

mypyc leaves an extension module beside each source it compiled. Python would load that extension
even after its source was edited, and mypyc's modules call one another natively, so they must load
all together or not at all. So at package import, `install` decides for all of them: when
UKPROXY_PURE_PYTHON=1 is set, or when any source is newer than its extension (edited since the last
`make compiled`), every compiled module is loaded from its source instead, and `MODE` says why.
"""

from __future__ import annotations

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


def stale(modules: dict[str, tuple[Path, Path]]) -> list[str]:
    """The modules whose source changed after their extension was built."""
    return sorted(name for name, (source, extension) in modules.items()
                  if source.stat().st_mtime > extension.stat().st_mtime)


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
        changed = stale(modules)
        if not changed:
            MODE = "compiled (mypyc)"
            return
        MODE = f"pure Python (edited since compiled: {', '.join(changed)}; run `make compiled`)"
    sys.meta_path.insert(0, _SourcesFirst({name: source for name, (source, _) in modules.items()}))
