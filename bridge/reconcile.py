"""Start-up repair after an unclean stop: make the namespace sane and drop TAPs nobody owns."""

from bridge.loops import run_blocking
from bridge.network import BackendNetwork


async def reconcile_async(network: BackendNetwork, keep_taps: set[str]) -> list[str]:
    """Bring `network` up (repairing it), remove every TAP not in `keep_taps`; return the removed, sorted.

    TAPs in `keep_taps` that exist stay, re-attached to the bridge and up; ones that do not exist
    are not created here (the VM launcher adds its TAP when it boots the VM).
    """
    await network.up_async()
    removed = []
    for name in await network.taps_async():
        if name not in keep_taps and await network.remove_tap_async(name):
            removed.append(name)
    return removed


def reconcile(network: BackendNetwork, keep_taps: set[str]) -> list[str]:
    return run_blocking(reconcile_async(network, keep_taps))
