"""Hand-written C for the few paths where even compiled Python costs more than nginx's C.

Each module here is optional: setup.py builds it beside the mypyc extensions, and `load` returns it
only when it was built and ukproxy is not told to run pure Python (UKPROXY_PURE_PYTHON=1); otherwise
the caller keeps its Python path, which stays correct and tested. docs/architecture.md, "Native paths".
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from ukproxy.compiled import PURE_ENV

log = logging.getLogger("ukproxy.native")


def load(name: str) -> ModuleType | None:
    """ukproxy.native.<name> when it is built and allowed, else None (the caller's Python path)."""
    if os.environ.get(PURE_ENV) == "1":
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as e:
        log.debug("native %s not loaded: %s", name, e)
        return None
