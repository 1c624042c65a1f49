"""Named network namespaces: create, remove, list and enter them.

A named namespace is an nsfs bind mount at /run/netns/NAME (iproute2's convention, which pyroute2
follows), so `ip netns` and `ip -n NAME` see ours.
"""

import ctypes
import errno
import os
from pathlib import Path

from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pyroute2_netns

from bridge.errors import NamespaceMissing
from bridge.loops import run_blocking, run_in_thread_loop

NETNS_DIR = Path(pyroute2_netns.NETNS_RUN_DIR)
CLONE_NEWNET = 0x40000000

# Loaded once at import: enter_netns runs in preexec_fn after fork, where looking libc up
# (ctypes.util.find_library spawns ldconfig) would be unsafe.
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_DIR / check_netns_name(name)


def check_netns_name(name: str) -> str:
    """Return `name` if it can name a namespace file, else raise ValueError."""
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > 255:
        raise ValueError(f"invalid network namespace name {name!r}")
    return name


def _is_namespace_file(path: Path) -> bool:
    """True when `path` is a mounted namespace, not a leftover empty file.

    All nsfs inodes share one device, so comparing st_dev with our own namespace's tells
    a bind mount from the plain file that a crashed `create` leaves behind.
    """
    try:
        return path.stat().st_dev == os.stat("/proc/self/ns/net").st_dev
    except FileNotFoundError:
        return False


def netns_exists(name: str) -> bool:
    return _is_namespace_file(netns_path(name))


def list_netns() -> list[str]:
    """Names of the mounted network namespaces, sorted."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if _is_namespace_file(NETNS_DIR / n))


def remove_netns(name: str) -> bool:
    """Unmount and delete the namespace file; True if there was one. Idempotent.

    Links inside vanish with the namespace once no process holds it any more.
    """
    path = netns_path(name)
    if not path.exists():
        return False
    pyroute2_netns.remove(name)  # umount2(MNT_DETACH) then unlink; tolerates a never-mounted file
    return True


async def _set_loopback_up(name: str) -> None:
    async with AsyncIPRoute(netns=name, flags=0) as ipr:
        await ipr.link("set", ifname="lo", state="up")


async def ensure_netns(name: str) -> bool:
    """Make sure namespace `name` exists with `lo` up; True if it had to be created.

    A leftover unmounted file (a create that died half-way) is replaced. Needs a stdlib asyncio
    loop; callers outside bridge use create_netns or create_netns_async.
    """
    path = netns_path(name)
    created = False
    if not _is_namespace_file(path):
        if path.exists():
            remove_netns(name)
        pyroute2_netns.create(name)
        created = True
    await _set_loopback_up(name)
    return created


def create_netns(name: str) -> bool:
    return run_blocking(ensure_netns(name))


async def create_netns_async(name: str) -> bool:
    return await run_in_thread_loop(ensure_netns(name))


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace `name`.

    Meant for a freshly forked, single-threaded worker (so the whole process moves) and for
    subprocess preexec_fn (so QEMU opens its TAP inside). Sockets made afterwards live in `name`.
    """
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceMissing(name) from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:
                raise NamespaceMissing(name)
            raise OSError(err, f"setns into network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)
