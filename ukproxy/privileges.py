"""Workers run unprivileged: the identity they drop to, and the file-descriptor limit they need.

A worker takes what needs root first (its inherited sockets, the backend namespace, a higher
RLIMIT_NOFILE), imports everything it will use, and only then drops to `user`/`group` (by default
`nobody` when the master runs as root), so a later import cannot fail on a directory only root reads.
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import os
import pwd
import resource
from dataclasses import dataclass

from ukproxy.config import Config

DEFAULT_USER = "nobody"
FDS_PER_CONNECTION = 1  # client and upstream connections are already counted separately
FD_MARGIN = 128  # listening sockets, logs, metrics files, the control channel, health checks

# Modules a worker may import lazily after it started serving; loaded before the drop.
LATE_IMPORTS = (
    "encodings.idna", "json", "ukproxy.proxy.http", "ukproxy.upstream.keepalive",
    "ukproxy.metrics", "ukproxy.access_log", "asyncio.sslproto", "concurrent.futures.thread",
)


class PrivilegeError(Exception):
    pass


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int


def worker_identity(config: Config) -> Identity | None:
    """Who workers run as; None when the master is not root (nothing to drop)."""
    if os.geteuid() != 0:
        return None
    name = config.user or DEFAULT_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"{config.path}: user: no user named {name!r}") from None
    gid = entry.pw_gid
    if config.group is not None:
        try:
            gid = grp.getgrnam(config.group).gr_gid
        except KeyError:
            raise PrivilegeError(f"{config.path}: group: no group named {config.group!r}") from None
    return Identity(name, entry.pw_uid, gid)


def needed_nofile(config: Config) -> int:
    return config.worker_rlimit_nofile or config.worker_connections * FDS_PER_CONNECTION + FD_MARGIN


def raise_nofile_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE to `needed` (the hard limit too, when root); a clear error when impossible."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    except (ValueError, OSError) as e:
        raise PrivilegeError(
            f"worker_connections needs {needed} file descriptors but RLIMIT_NOFILE is {soft}/{hard} "
            f"and cannot be raised ({e}); lower worker_connections or raise the limit") from None
    return needed


def preload_late_imports() -> None:
    for name in LATE_IMPORTS:
        with contextlib.suppress(ImportError):  # optional pieces that this build may not have
            importlib.import_module(name)


def drop_privileges(identity: Identity) -> None:
    os.setgroups([])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PrivilegeError("still root after dropping privileges")
