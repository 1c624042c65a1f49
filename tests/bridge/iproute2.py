"""Independent checks with the `ip` tool, so tests do not grade pyroute2 with pyroute2."""

import json
import subprocess
from typing import Any


def ip_json(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links(netns: str) -> dict[str, dict[str, Any]]:
    """ifname -> `ip -d link` record inside `netns`."""
    return {rec["ifname"]: rec for rec in ip_json("-n", netns, "-d", "link", "show")}


def ipv4_addresses(netns: str, ifname: str) -> list[str]:
    (rec,) = ip_json("-n", netns, "addr", "show", "dev", ifname)
    return [f"{a['local']}/{a['prefixlen']}" for a in rec["addr_info"] if a["family"] == "inet"]


def is_tap(rec: dict[str, Any]) -> bool:
    info = rec.get("linkinfo", {})
    return info.get("info_kind") == "tun" and info.get("info_data", {}).get("type") == "tap"


def neighbour_mac(netns: str, address: str) -> str | None:
    recs = ip_json("-n", netns, "neigh", "show", address)
    return recs[0].get("lladdr") if recs else None


def delete_netns(name: str) -> None:
    """Last-resort cleanup that does not trust the code under test."""
    if name in netns_names():
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
