"""Interface names: the kernel limits them to IFNAMSIZ-1 = 15 bytes."""

import re

IFNAME_MAX = 15
TAP_PREFIX = "uktap"

# Characters that `ip` and the kernel accept without quoting trouble.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_ifname(name: str) -> str:
    """Return `name` if it is a usable interface name, else raise ValueError."""
    if not name or len(name) > IFNAME_MAX:
        raise ValueError(f"interface name {name!r} must be 1..{IFNAME_MAX} characters")
    if not _IFNAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"interface name {name!r} may use only letters, digits, '_', '.', '-'")
    return name


def tap_name(vm_id: int) -> str:
    """The TAP name for VM number `vm_id`, e.g. uktap7."""
    if vm_id < 0:
        raise ValueError(f"VM id must be >= 0, got {vm_id}")
    return check_ifname(f"{TAP_PREFIX}{vm_id}")
