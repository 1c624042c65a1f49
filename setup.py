"""Compiles ukproxy's request path to C with mypyc; everything else stays Python.

The listed modules are the per-request work of the http and tcp proxies (parsing, exchanges,
keep-alive pools, balancers, tallies): compiled, they cost about half the CPU per request. mypyc
(from the mypy project) compiles ordinary type-annotated Python, so the same sources still run as
plain Python where no compiler is at hand, or with UKPROXY_PURE_PYTHON=1 (see ukproxy/compiled.py).
Beside the extensions the build writes the hash of each source it compiled: at import, ukproxy loads
them only while every source still has that hash.
"""

import glob
import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "ukproxy/accept_cycle.py",  # its connection factory and close callback run once per new connection
    "ukproxy/proxy/h2_connection.py",  # HTTP/2 around the h2 library: 5-8 µs less CPU per request compiled
    "ukproxy/proxy/h2_hpack.py",  # HPACK of HTTP/2 both ways: about 12 µs per request as hpack's pure Python
    "ukproxy/proxy/h2_stream.py",  # its classes subclass compiled ones (ClientSide, Exchange): compiled with them
    "ukproxy/proxy/deadline_wheel.py",  # every client connection's deadlines
    "ukproxy/proxy/http.py",
    "ukproxy/proxy/http_body.py",
    "ukproxy/proxy/http_exchange.py",
    "ukproxy/proxy/http_messages.py",
    "ukproxy/proxy/http_request.py",
    "ukproxy/proxy/http_tunnel.py",
    "ukproxy/proxy/http_upstream.py",
    "ukproxy/proxy/routing.py",
    # the edge rules a request meets (header, rewrite and return rules, request ids, real addresses): the
    # rule path costs about a third as much compiled (docs/architecture.md, "The edge")
    "ukproxy/edge/headers.py",
    "ukproxy/edge/http_edge.py",
    "ukproxy/edge/realip.py",
    "ukproxy/edge/request_id.py",
    "ukproxy/edge/rewrite.py",
    "ukproxy/edge/variables.py",
    "ukproxy/proxy/tcp.py",
    "ukproxy/proxy/tcp_native.py",  # the C relay's Python side: twice per connection
    "ukproxy/upstream/connect_callback.py",  # the tcp proxy's connect, once per client connection
    "ukproxy/upstream/balancing.py",
    "ukproxy/upstream/group.py",
    "ukproxy/upstream/keepalive.py",
    "ukproxy/upstream/server.py",
    *sorted(p for p in glob.glob("ukproxy/upstream/balancers/*.py") if not p.endswith("__init__.py")),
    "ukproxy/metrics/tally.py",
    "ukproxy/worker_state.py",
]


# Hand-written C beside the compiled Python: the few paths where even compiled Python costs more than
# nginx's C (docs/architecture.md, "Native paths"). Each is optional: ukproxy/native/__init__.py loads it
# when built and falls back to the Python path otherwise. Listed as (module, source, libraries).
NATIVE = [
    ("ukproxy.native.tls_transport", "ukproxy/native/tls_transport.c", ["ssl", "crypto"]),
    ("ukproxy.native.tcp_relay", "ukproxy/native/tcp_relay.c", []),
]


def native_modules() -> list[Extension]:
    return [Extension(name, [source], libraries=libraries, extra_compile_args=["-O2", "-Wall"])
            for name, source, libraries in NATIVE if os.path.exists(source)]


def ext_modules() -> list:
    if os.environ.get("UKPROXY_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc is not installed, ukproxy stays pure Python")
        return []
    return [*mypycify(COMPILED, opt_level="3"), *native_modules()]


def _compiled_rule():  # type: ignore[no-untyped-def]
    """ukproxy/compiled.py alone, which owns the record's format: importing the package would run its install()."""
    spec = importlib.util.spec_from_file_location("ukproxy_compiled_rule", "ukproxy/compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULE = _compiled_rule()
# Hashed before mypyc reads the sources: the record names what was compiled, not what is there afterwards.
SOURCES = {Path(p).relative_to("ukproxy").as_posix(): RULE.source_hash(Path(p)) for p in COMPILED}


class BuildAndRecord(build_ext):
    """build_ext, then the record of the compiled sources beside the extensions (in place, or in the wheel)."""

    def run(self) -> None:
        super().run()
        if self.extensions:
            RULE.write_record(self._package_dir(), SOURCES)

    def get_outputs(self) -> list[str]:  # editable installs copy these into the tree
        outputs = super().get_outputs()
        return [*outputs, str(self._package_dir() / RULE.RECORD)] if self.extensions else outputs

    def _package_dir(self) -> Path:
        return Path(self.get_ext_fullpath("ukproxy.compiled")).parent  # where a ukproxy/ extension goes


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildAndRecord})
