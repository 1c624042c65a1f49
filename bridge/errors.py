"""Errors raised by the bridge package; each message says what to do next."""


class BridgeError(Exception):
    """Base class: something about the backend network is not as required."""


class NamespaceMissing(BridgeError):
    def __init__(self, netns: str) -> None:
        super().__init__(f"network namespace {netns!r} does not exist (run `python -m bridge up` first)")
        self.netns = netns


class BridgeMissing(BridgeError):
    def __init__(self, netns: str, bridge: str) -> None:
        super().__init__(f"bridge {bridge!r} is missing in namespace {netns!r} (run `python -m bridge up`)")
        self.netns = netns
        self.bridge = bridge


class NotATap(BridgeError):
    def __init__(self, netns: str, name: str, kind: str | None) -> None:
        super().__init__(f"link {name!r} in namespace {netns!r} is a {kind or 'plain'} link, not a TAP")
        self.name = name
