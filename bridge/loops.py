"""Give our rtnetlink coroutines an event loop they can run on, whatever the caller's situation.

pyroute2 0.9's AsyncIPRoute needs a stdlib asyncio loop: uvloop refuses its netlink datagram
endpoint ("invalid family 16"). So the coroutines always run on a private stdlib loop: in the
caller's thread when it has no loop (the master's set-up, the CLI), else in a worker thread.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _run_on_stdlib_loop(coro: Coroutine[Any, Any, T]) -> T:
    # An explicit factory: an installed uvloop policy must not choose this loop.
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from code with no running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_stdlib_loop(coro)
    coro.close()
    raise RuntimeError("called a blocking bridge API inside a running event loop; await the *_async variant")


async def run_in_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` run on a private stdlib loop in a worker thread (works under uvloop too)."""
    return await asyncio.to_thread(_run_on_stdlib_loop, coro)
