"""The external programs the bench drives: presence checks that fail loudly, and their versions."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys


class MissingTool(RuntimeError):
    """A program a scenario needs is not installed; the message says what to install."""


INSTALL_HINT = {
    "wrk": "apt-get install wrk (or `make deps`)",
    "ab": "apt-get install apache2-utils (or `make deps`)",
    "nginx": "apt-get install nginx libnginx-mod-stream (or `make deps`)",
    "qemu-system-x86_64": "apt-get install qemu-system-x86 (or `make deps`)",
    "ip": "apt-get install iproute2",
    "haproxy": "apt-get install haproxy (optional: its scenarios are skipped without it)",
}

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def require(*names: str) -> None:
    """Raise MissingTool naming every missing program and how to get it."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        hints = "; ".join(f"{n}: {INSTALL_HINT.get(n, 'install it')}" for n in missing)
        raise MissingTool(f"missing tool(s): {', '.join(missing)} ({hints})")


def have(name: str) -> bool:
    return shutil.which(name) is not None


def _first_line(argv: list[str], pattern: str = r"(.*)") -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(1).strip() if m else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """What the figures were measured on: CPU, cores, kernel and the versions of every program involved."""
    import os

    import uvloop

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "uvloop": uvloop.__version__,
        "nginx": _first_line(["nginx", "-v"], r"nginx/(\S+)"),
        "qemu": _first_line(["qemu-system-x86_64", "--version"], r"version (\S+)"),
        "wrk": _first_line(["wrk", "-v"], r"wrk (\S+)"),
        "ab": _first_line(["ab", "-V"], r"Version (\S+)"),
        "haproxy": _first_line(["haproxy", "-v"], r"version (\S+)") if have("haproxy") else "not installed",
    }
