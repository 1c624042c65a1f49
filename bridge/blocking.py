"""Run one of our coroutines from code that has no event loop (the master's set-up, the CLI)."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh event loop.

    pyroute2 0.9's sync IPRoute fails inside a running loop for the same reason this would:
    a loop cannot be nested. We refuse with a pointer to the async twin instead of deadlocking.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("called a blocking bridge API inside a running event loop; await the *_async variant")
