"""ukproxy's backend network: a namespace with a bridge (the VMs' gateway), one TAP per VM, addresses.

Blocking calls are for code without an event loop (the master's set-up, the CLI); every
network operation also has an `*_async` twin that works inside any loop, uvloop included.
"""

from bridge.addresses import AddressAllocator, AddressesExhausted, AddressInUse, mac_for
from bridge.errors import BridgeError, BridgeMissing, NamespaceMissing, NotATap
from bridge.names import tap_name
from bridge.netns import create_netns, enter_netns, list_netns, netns_exists, remove_netns
from bridge.network import BackendNetwork
from bridge.reconcile import reconcile, reconcile_async
from bridge.tapfd import open_tap

__all__ = [
    "AddressAllocator",
    "AddressInUse",
    "AddressesExhausted",
    "BackendNetwork",
    "BridgeError",
    "BridgeMissing",
    "NamespaceMissing",
    "NotATap",
    "create_netns",
    "enter_netns",
    "list_netns",
    "mac_for",
    "netns_exists",
    "open_tap",
    "reconcile",
    "reconcile_async",
    "remove_netns",
    "tap_name",
]
