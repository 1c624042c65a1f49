"""The control channel and its typed messages: what is sent arrives as the same message, a message right
behind `init` is not lost to a starting worker, and a line that is not one of ours is refused by name."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ukproxy import control
from ukproxy.privileges import Identity
from ukproxy.protocol import (
    Heartbeat,
    Init,
    Message,
    ProtocolError,
    Ready,
    VmBoot,
    VmBooted,
    VmBootFailed,
    VmExited,
    VmInfo,
    VmStop,
    describe_exit,
)

VM = VmInfo("w0-1", "web", "10.77.0.10", 8080, cpu=1, boot_seconds=0.06)
INIT = Init(worker=0, config_text="workers = 1\n", config_path="/etc/ukproxy.toml", cpu=None, listen_fds=[5, 6],
            lock_path=None, netns="ukproxy", identity=Identity("nobody", 65534, 65534), nofile=2048,
            heartbeat_interval=1.0, vms=[VM])


@pytest.mark.parametrize("message", [
    INIT, VmBooted(VM), VmBootFailed("web", "no CPU left"), VmExited("w0-1", "web"),
    Ready(0, 1234), Heartbeat(), VmBoot("web", 3, "overflow"), VmStop("w0-1"),
])
def test_every_message_comes_back_as_itself(message: Message) -> None:
    assert control.decode(control.encode(message)) == message


@pytest.mark.parametrize("line, complaint", [
    (b'{"type": "reboot"}', "unknown control message type 'reboot'"),
    (b'{"vm": "w0-1"}', "unknown control message type None"),
    (b'{"type": "vm_stop"}', "bad 'vm_stop' message"),
    (b'{"type": "vm_stop", "vm": "a", "extra": 1}', "bad 'vm_stop' message"),
    (b'[1, 2]', "must be a JSON object"),
    (b'{"type": ', "not JSON"),
])
def test_a_line_that_is_not_ours_is_refused_by_name(line: bytes, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        control.decode(line)


def test_messages_behind_init_reach_the_stream() -> None:
    master_end, worker_end = socket.socketpair()
    master_end.sendall(control.encode(INIT) + control.encode(VmExited("w-1", "web")))  # the first read gets both
    init, rest = control.read_init(worker_end)
    assert init == INIT

    async def next_messages() -> list[Message | None]:
        channel = await control.ControlChannel.open(worker_end, rest)
        master_end.sendall(b'{"type": "nonsense"}\n' + control.encode(VmStop("w-2")))  # the bad line is skipped
        got = [await channel.receive(), await channel.receive()]
        master_end.close()
        got.append(await channel.receive())  # EOF
        channel.close()
        return got

    assert asyncio.run(next_messages()) == [VmExited("w-1", "web"), VmStop("w-2"), None]


def test_the_first_message_must_be_init() -> None:
    master_end, worker_end = socket.socketpair()
    master_end.sendall(control.encode(Heartbeat()))
    with pytest.raises(ProtocolError, match="must be init"):
        control.read_init(worker_end)
    master_end.close()
    worker_end.close()


def test_exit_statuses_in_words() -> None:
    assert describe_exit(3 << 8) == "exited with code 3"
    assert describe_exit(9) == "killed by signal 9 (SIGKILL)"
