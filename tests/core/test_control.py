"""The control channel: a message sent right behind `init` is not lost (nor fatal) to a starting worker."""

from __future__ import annotations

import asyncio
import socket

from ukproxy import control


def test_messages_behind_init_reach_the_stream() -> None:
    master_end, worker_end = socket.socketpair()
    init_then_more = control.encode({"type": "init", "worker": 0}) + control.encode({"type": "vm_exited", "vm": "w-1"})
    master_end.sendall(init_then_more)  # one write: the worker's first read gets both
    init, rest = control.read_blocking(worker_end)
    assert init == {"type": "init", "worker": 0}

    async def next_message() -> dict[str, object] | None:
        channel = await control.ControlChannel.open(worker_end, rest)
        master_end.sendall(control.encode({"type": "quit"}))
        first, second = await channel.receive(), await channel.receive()
        channel.close()
        return {"first": first, "second": second}

    got = asyncio.run(next_message())
    assert got == {"first": {"type": "vm_exited", "vm": "w-1"}, "second": {"type": "quit"}}
    master_end.close()
