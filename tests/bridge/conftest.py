import os
import secrets
from collections.abc import Iterator

import pytest

from bridge.network import BackendNetwork
from tests.bridge.iproute2 import delete_netns

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces, bridges and TAPs")


def unique_netns(purpose: str) -> str:
    return f"ukt-{purpose}-{secrets.token_hex(4)}"


@pytest.fixture
def netns_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace name, removed after the test whatever happened."""
    name = unique_netns(request.node.module.__name__.rsplit("_", 1)[-1][:8])
    yield name
    delete_netns(name)


@pytest.fixture
def network(netns_name: str) -> Iterator[BackendNetwork]:
    net = BackendNetwork(netns=netns_name)
    yield net
    try:
        net.down()
    finally:
        delete_netns(netns_name)
