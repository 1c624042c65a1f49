"""The backend network: a namespace holding a bridge (the VMs' gateway) and one TAP per VM.

Every operation is idempotent and has a blocking form (for the master's set-up and the CLI,
which run no event loop) and an `*_async` form (for code inside any loop, uvloop included).
The work itself is done by private coroutines run on a private stdlib loop (see bridge.loops).
"""

from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from pyroute2 import AsyncIPRoute

from bridge import links
from bridge.addresses import mac_for
from bridge.errors import BridgeMissing, NamespaceMissing, NotATap
from bridge.loops import run_blocking, run_in_thread_loop
from bridge.names import check_ifname
from bridge.netns import check_netns_name, ensure_netns, netns_exists, remove_netns


@dataclass(frozen=True)
class BackendNetwork:
    netns: str = "ukproxy"
    bridge: str = "ukbr0"
    subnet: IPv4Network = field(default=IPv4Network("10.77.0.0/24"))

    def __post_init__(self) -> None:
        check_netns_name(self.netns)
        check_ifname(self.bridge)
        subnet = IPv4Network(self.subnet)  # accepts "10.77.0.0/24" too
        if subnet.prefixlen > 30:
            raise ValueError(f"subnet {subnet} is too small for a gateway and VMs (need /30 or larger)")
        object.__setattr__(self, "subnet", subnet)

    @property
    def gateway(self) -> IPv4Interface:
        """The bridge's address: the subnet's first host, e.g. 10.77.0.1/24."""
        return IPv4Interface(f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}")

    @property
    def gateway_mac(self) -> str:
        # Fixed, so the bridge does not take a new MAC from whichever port it gains or loses.
        return mac_for(self.gateway.ip)

    def _open(self) -> AsyncIPRoute:
        if not netns_exists(self.netns):
            raise NamespaceMissing(self.netns)
        return AsyncIPRoute(netns=self.netns, flags=0)  # flags=0: never create the namespace by accident

    async def _bridge_link(self, ipr: AsyncIPRoute) -> links.Link:
        link = await links.find_link(ipr, self.bridge)
        if link is None or links.link_kind(link) != "bridge":
            raise BridgeMissing(self.netns, self.bridge)
        return link

    # -- up ---------------------------------------------------------------------------------------

    async def _up(self) -> None:
        """Create or repair: namespace, bridge with the gateway address and MAC, all TAPs enslaved and up."""
        await ensure_netns(self.netns)
        async with self._open() as ipr:
            bridge = await self._ensure_bridge(ipr)
            for link in await links.all_links(ipr):
                if links.is_tap(link):
                    await self._attach(ipr, link, bridge)

    async def _ensure_bridge(self, ipr: AsyncIPRoute) -> int:
        link = await links.find_link(ipr, self.bridge)
        if link is not None and links.link_kind(link) != "bridge":
            await links.delete_link(ipr, link["index"])  # a squatter under our bridge's name
            link = None
        if link is None:
            await ipr.link("add", ifname=self.bridge, kind="bridge")
            link = await self._bridge_link(ipr)
        index: int = link["index"]
        if link.get("address") != self.gateway_mac:
            await ipr.link("set", index=index, address=self.gateway_mac)
        wanted = (str(self.gateway.ip), self.gateway.network.prefixlen)
        present = await links.ipv4_addresses(ipr, index)
        for address, prefixlen in present:
            if (address, prefixlen) != wanted:
                await ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        if wanted not in present:
            await ipr.addr("add", index=index, address=wanted[0], prefixlen=wanted[1])
        if not links.is_admin_up(link):
            await ipr.link("set", index=index, state="up")
        return index

    async def _attach(self, ipr: AsyncIPRoute, link: links.Link, bridge_index: int) -> None:
        """Enslave `link` to the bridge and set it up, unless it already is."""
        if link.get("master") != bridge_index or not links.is_admin_up(link):
            await ipr.link("set", index=link["index"], master=bridge_index, state="up")

    def up(self) -> None:
        run_blocking(self._up())

    async def up_async(self) -> None:
        await run_in_thread_loop(self._up())

    # -- TAPs -------------------------------------------------------------------------------------

    async def _add_tap(self, name: str, owner_uid: int | None = None) -> int:
        """A persistent TAP `name` on the bridge, up; returns its ifindex.

        With `owner_uid`, that user (and otherwise only CAP_NET_ADMIN) may attach to the TAP, so an
        unprivileged QEMU can open it; without it, anyone who can open /dev/net/tun may. An existing
        link of that name that is not such a TAP (wrong kind or owner) is replaced.
        """
        if check_ifname(name) == self.bridge:
            raise ValueError(f"TAP name {name!r} is the bridge's name")
        async with self._open() as ipr:
            bridge = (await self._bridge_link(ipr))["index"]
            link = await links.find_link(ipr, name)
            if link is not None and not (links.is_tap(link) and links.tap_owner(link) == owner_uid):
                await links.delete_link(ipr, link["index"])
                link = None
            if link is None:
                await links.add_persistent_tap(ipr, name, owner_uid)
                link = await links.find_link(ipr, name)
                if link is None:
                    raise NotATap(self.netns, name, None)  # pyroute2 reported success but made nothing
            await self._attach(ipr, link, bridge)
            index: int = link["index"]
            return index

    def add_tap(self, name: str, owner_uid: int | None = None) -> int:
        return run_blocking(self._add_tap(name, owner_uid))

    async def add_tap_async(self, name: str, owner_uid: int | None = None) -> int:
        return await run_in_thread_loop(self._add_tap(name, owner_uid))

    async def _remove_tap(self, name: str) -> bool:
        """Delete TAP `name`; True if it existed. Refuses to delete a link that is not a TAP."""
        check_ifname(name)
        if not netns_exists(self.netns):
            return False
        async with self._open() as ipr:
            link = await links.find_link(ipr, name)
            if link is None:
                return False
            if not links.is_tap(link):
                raise NotATap(self.netns, name, links.link_kind(link))
            await links.delete_link(ipr, link["index"])
            return True

    def remove_tap(self, name: str) -> bool:
        return run_blocking(self._remove_tap(name))

    async def remove_tap_async(self, name: str) -> bool:
        return await run_in_thread_loop(self._remove_tap(name))

    async def _taps(self) -> list[str]:
        """Names of the TAPs in the namespace, sorted; [] when the namespace does not exist."""
        if not netns_exists(self.netns):
            return []
        async with self._open() as ipr:
            return sorted(link.get("ifname") for link in await links.all_links(ipr) if links.is_tap(link))

    def taps(self) -> list[str]:
        return run_blocking(self._taps())

    async def taps_async(self) -> list[str]:
        return await run_in_thread_loop(self._taps())

    # -- down -------------------------------------------------------------------------------------

    async def _down(self) -> None:
        """Remove the TAPs, the bridge and the namespace. Idempotent.

        Links are deleted explicitly because a process still inside (a QEMU) would keep the
        namespace, and them, alive after the unmount.
        """
        if netns_exists(self.netns):
            async with self._open() as ipr:
                for link in await links.all_links(ipr):
                    if links.is_tap(link):
                        await links.delete_link(ipr, link["index"])
                bridge = await links.find_link(ipr, self.bridge)
                if bridge is not None:
                    await links.delete_link(ipr, bridge["index"])
        remove_netns(self.netns)

    def down(self) -> None:
        run_blocking(self._down())

    async def down_async(self) -> None:
        await run_in_thread_loop(self._down())

    # -- status -----------------------------------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        """What is there now, as plain data (JSON-ready); never changes anything."""
        report: dict[str, Any] = {
            "netns": self.netns,
            "netns_exists": netns_exists(self.netns),
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "bridge": {"name": self.bridge, "present": False},
            "taps": [],
        }
        if not report["netns_exists"]:
            return report
        async with self._open() as ipr:
            all_links = await links.all_links(ipr)
            bridge = next(
                (x for x in all_links if x.get("ifname") == self.bridge and links.link_kind(x) == "bridge"),
                None,
            )
            bridge_index = None
            if bridge is not None:
                bridge_index = bridge["index"]
                addresses = [f"{a}/{p}" for a, p in await links.ipv4_addresses(ipr, bridge_index)]
                report["bridge"] = {
                    **links.link_summary(bridge),
                    "present": True,
                    "addresses": addresses,
                    "gateway_ok": addresses == [str(self.gateway)],
                }
            report["taps"] = sorted(
                (
                    {
                        **links.link_summary(x),
                        "on_bridge": bridge_index is not None and x.get("master") == bridge_index,
                        "owner_uid": links.tap_owner(x),
                    }
                    for x in all_links
                    if links.is_tap(x)
                ),
                key=lambda t: t["name"],
            )
        return report

    def status(self) -> dict[str, Any]:
        return run_blocking(self._status())

    async def status_async(self) -> dict[str, Any]:
        return await run_in_thread_loop(self._status())
