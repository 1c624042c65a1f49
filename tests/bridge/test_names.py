from ipaddress import IPv4Interface, IPv4Network

import pytest

from bridge.names import check_ifname, tap_name
from bridge.network import BackendNetwork


def test_tap_name_is_derived_from_the_vm_id_and_fits_ifnamsiz() -> None:
    assert tap_name(7) == "uktap7"
    assert len(tap_name(9_999_999_999)) == 15
    with pytest.raises(ValueError):
        tap_name(10_000_000_000)
    with pytest.raises(ValueError):
        tap_name(-1)


@pytest.mark.parametrize("bad", ["", "x" * 16, "a b", "a/b", "..", "tap:0"])
def test_bad_interface_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_ifname(bad)


def test_backend_network_defaults_and_derived_gateway() -> None:
    net = BackendNetwork()
    assert (net.netns, net.bridge, net.subnet) == ("ukproxy", "ukbr0", IPv4Network("10.77.0.0/24"))
    assert net.gateway == IPv4Interface("10.77.0.1/24")
    assert net.gateway_mac == "52:54:00:4d:00:01"
    assert BackendNetwork(subnet="10.9.0.0/16").gateway == IPv4Interface("10.9.0.1/16")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"bridge": "b" * 16}, {"netns": "a/b"}, {"netns": ""}, {"subnet": "10.77.0.0/31"}, {"subnet": "10.77.0.1/24"}],
)
def test_backend_network_refuses_bad_settings(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        BackendNetwork(**kwargs)  # type: ignore[arg-type]


async def test_blocking_api_inside_a_running_loop_points_to_the_async_one() -> None:
    with pytest.raises(RuntimeError, match="_async"):
        BackendNetwork(netns="ukt-never-created").up()
