"""Compiles ukproxy's request path to C with mypyc; everything else stays Python.

The listed modules are the per-request work of the http and tcp proxies (parsing, exchanges,
keep-alive pools, balancers, tallies): compiled, they cost about half the CPU per request. mypyc
(from the mypy project) compiles ordinary type-annotated Python, so the same sources still run as
plain Python where no compiler is at hand, or with UKPROXY_PURE_PYTHON=1 (see ukproxy/compiled.py).
"""

import glob
import os

from setuptools import setup

COMPILED = [
    "ukproxy/proxy/http.py",
    "ukproxy/proxy/http_exchange.py",
    "ukproxy/proxy/http_messages.py",
    "ukproxy/proxy/http_request.py",
    "ukproxy/proxy/http_upstream.py",
    "ukproxy/proxy/routing.py",
    "ukproxy/upstream/balancing.py",
    "ukproxy/upstream/group.py",
    "ukproxy/upstream/keepalive.py",
    "ukproxy/upstream/server.py",
    *sorted(p for p in glob.glob("ukproxy/upstream/balancers/*.py") if not p.endswith("__init__.py")),
    "ukproxy/metrics/tally.py",
    "ukproxy/worker_state.py",
]


def ext_modules() -> list:
    if os.environ.get("UKPROXY_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc is not installed, ukproxy stays pure Python")
        return []
    return mypycify(COMPILED, opt_level="3")


setup(ext_modules=ext_modules())
