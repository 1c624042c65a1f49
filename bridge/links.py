"""Small rtnetlink helpers over an open AsyncIPRoute: find links, tell TAPs apart, add/remove them."""

import errno
import socket
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
IFF_TAP = 0x2  # IFLA_TUN_TYPE of a tap-mode tun device

Link = Any  # a pyroute2 ifinfmsg; pyroute2 ships no type for it


async def find_link(ipr: AsyncIPRoute, name: str) -> Link | None:
    try:
        (link,) = await ipr.link("get", ifname=name)
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise
    return link


async def all_links(ipr: AsyncIPRoute) -> list[Link]:
    return [link async for link in await ipr.link("dump")]


def link_kind(link: Link) -> str | None:
    return link.get(("linkinfo", "kind"))


def is_tap(link: Link) -> bool:
    return link_kind(link) == "tun" and link.get(("linkinfo", "data", "IFLA_TUN_TYPE")) == IFF_TAP


def tap_owner(link: Link) -> int | None:
    return link.get(("linkinfo", "data", "IFLA_TUN_OWNER"))


def is_admin_up(link: Link) -> bool:
    return bool(link["flags"] & IFF_UP)


def link_summary(link: Link) -> dict[str, Any]:
    return {
        "name": link.get("ifname"),
        "index": link["index"],
        "up": is_admin_up(link),
        "operstate": link.get("operstate"),
        "mac": link.get("address"),
    }


async def ipv4_addresses(ipr: AsyncIPRoute, index: int) -> list[tuple[str, int]]:
    """(address, prefixlen) pairs of the IPv4 addresses on link `index`."""
    return [
        (msg.get("address"), msg["prefixlen"])
        async for msg in await ipr.addr("dump")
        if msg["index"] == index and msg["family"] == socket.AF_INET
    ]


async def add_persistent_tap(ipr: AsyncIPRoute, name: str, owner_uid: int | None) -> None:
    """Create a persistent tap-mode device without packet info headers, as QEMU opens it.

    pyroute2 turns this request into /dev/net/tun ioctls run inside the socket's namespace.
    """
    spec: dict[str, Any] = {"ifname": name, "kind": "tuntap", "mode": "tap", "ifr": {"no_pi": 1}}
    if owner_uid is not None:
        spec["uid"] = owner_uid
    await ipr.link("add", **spec)


async def delete_link(ipr: AsyncIPRoute, index: int) -> None:
    try:
        await ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code != errno.ENODEV:  # already gone: fine, that is what we wanted
            raise
