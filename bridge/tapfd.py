"""Open a TAP that lives in a namespace and hand back its file descriptor.

The master can open the TAP itself and pass the fd to QEMU (`-netdev tap,fd=N` with pass_fds),
so QEMU needs neither privileges nor a place in the namespace.
"""

import fcntl
import os
import socket
import struct
import threading

from bridge.names import check_ifname
from bridge.netns import enter_netns

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def attach_tap_here(name: str, vnet_hdr: bool = False) -> int:
    """Attach to TAP `name` in the calling thread's namespace; returns the fd (close-on-exec)."""
    try:
        socket.if_nametoindex(check_ifname(name))
    except OSError:
        # TUNSETIFF would quietly create a transient TAP, off the bridge, that dies with the fd.
        raise FileNotFoundError(f"no TAP named {name!r} here (add it with BackendNetwork.add_tap)") from None
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_tap(netns: str, name: str, vnet_hdr: bool = False) -> int:
    """Attach to TAP `name` inside namespace `netns` and return the fd.

    setns moves only the calling thread, so a short-lived thread goes into the namespace and the
    caller's own namespace is untouched; file descriptors are shared by the whole process.
    """
    result: list[int] = []
    failure: list[BaseException] = []

    def in_namespace() -> None:
        try:
            enter_netns(netns)
            result.append(attach_tap_here(name, vnet_hdr))
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=in_namespace, name=f"open-tap-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
