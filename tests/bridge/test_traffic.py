"""Frames really flow between the gateway (the namespace's kernel) and whoever holds a TAP."""

import os
import select
import socket
import struct
import time
from ipaddress import IPv4Address

import pytest

from bridge.addresses import mac_for
from bridge.netns import enter_netns
from bridge.network import BackendNetwork
from bridge.tapfd import attach_tap_here, open_tap
from tests.bridge import iproute2
from tests.bridge.conftest import needs_root
from tests.bridge.forked import call_in_fork

pytestmark = [pytest.mark.root, needs_root]

VM_IP = "10.77.0.10"
GATEWAY_IP = "10.77.0.1"
ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
PAYLOAD = b"hello from the gateway"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def read_frame_matching(fd: int, want, deadline: float) -> bytes:  # type: ignore[no-untyped-def]
    """Read frames until `want(frame)`; the bridge also emits IPv6 chatter we skip."""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            frame = os.read(fd, 2048)
            if want(frame):
                return frame
    raise TimeoutError("no matching frame on the TAP")


def is_arp_request_for(frame: bytes, target: str) -> bool:
    return (
        len(frame) >= 42
        and struct.unpack("!H", frame[12:14])[0] == ETH_ARP
        and struct.unpack("!H", frame[20:22])[0] == 1
        and frame[38:42] == IPv4Address(target).packed
    )


def is_udp_to(frame: bytes, target: str, port: int) -> bool:
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_IPV4:
        return False
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    return (
        frame[23] == socket.IPPROTO_UDP
        and frame[30:34] == IPv4Address(target).packed
        and (struct.unpack("!H", frame[udp + 2 : udp + 4])[0] == port)
    )


def arp_reply(request: bytes, vm_mac: str, vm_ip: str) -> bytes:
    asker_mac, asker_ip = request[22:28], request[28:32]
    ethernet = asker_mac + mac_bytes(vm_mac) + struct.pack("!H", ETH_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, 2) + mac_bytes(vm_mac) + IPv4Address(vm_ip).packed
    return ethernet + arp + asker_mac + asker_ip


def play_vm(netns: str, tap: str) -> dict[str, object]:
    """In the namespace: hold the TAP like QEMU would, send from the gateway, answer its ARP, get the datagram."""
    enter_netns(netns)
    tap_fd = attach_tap_here(tap)
    deadline = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(PAYLOAD, (VM_IP, 9999))  # waits in the ARP queue until we answer
        request = read_frame_matching(tap_fd, lambda f: is_arp_request_for(f, VM_IP), deadline)
        os.write(tap_fd, arp_reply(request, mac_for(VM_IP), VM_IP))
        datagram = read_frame_matching(tap_fd, lambda f: is_udp_to(f, VM_IP, 9999), deadline)
    os.close(tap_fd)
    return {
        "arp_sender_ip": str(IPv4Address(request[28:32])),
        "arp_sender_mac": request[22:28].hex(":"),
        "udp_dst_mac": datagram[0:6].hex(":"),
        "udp_payload_tail": datagram[-len(PAYLOAD) :],
    }


def test_gateway_arps_through_the_bridge_and_delivers_to_the_tap_holder(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap1")
    seen = call_in_fork(play_vm, network.netns, "uktap1")
    assert seen["arp_sender_ip"] == GATEWAY_IP
    assert seen["arp_sender_mac"] == network.gateway_mac
    assert seen["udp_dst_mac"] == mac_for(VM_IP)  # our ARP reply was taken
    assert seen["udp_payload_tail"] == PAYLOAD
    assert iproute2.neighbour_mac(network.netns, VM_IP) == mac_for(VM_IP)


def test_open_tap_returns_a_live_fd_and_leaves_the_caller_in_its_namespace(network: BackendNetwork) -> None:
    network.up()
    network.add_tap("uktap2")
    ours = os.readlink("/proc/thread-self/ns/net")
    fd = open_tap(network.netns, "uktap2")
    try:
        assert os.readlink("/proc/thread-self/ns/net") == ours
        assert not os.get_inheritable(fd)
        assert "LOWER_UP" in iproute2.links(network.netns)["uktap2"]["flags"]  # carrier: someone holds it
    finally:
        os.close(fd)
    assert "LOWER_UP" not in iproute2.links(network.netns)["uktap2"]["flags"]


def test_open_tap_refuses_a_missing_tap_instead_of_creating_one(network: BackendNetwork) -> None:
    network.up()
    with pytest.raises(FileNotFoundError, match="uktap7"):
        open_tap(network.netns, "uktap7")
    assert network.taps() == []
