"""The one way tests wait: poll a probe until its value is acceptable, within a bound.

A test that waits for a condition says what it waited for; when the bound passes, the failure names
it and shows the last value the probe returned, so a timeout on a busy machine can be told from a
wrong answer. `await_until` is the same for tests whose subject runs on their own event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _truthy(value: object) -> bool:
    return bool(value)


def wait_until(probe: Callable[[], T], what: str, *, accept: Callable[[T], bool] = _truthy,
               timeout: float = 20.0, interval: float = 0.05, context: Callable[[], str] | None = None) -> T:
    """Call `probe` every `interval` s until `accept(value)` holds, and return that value.

    After `timeout` s raise AssertionError naming `what`, the last value seen, and `context()` (a
    log tail, say). Bounds are generous: QEMU under TCG on a shared machine can be slow."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, timeout, value, context))
        time.sleep(interval)


async def await_until(probe: Callable[[], T], what: str, *, accept: Callable[[T], bool] = _truthy,
                      timeout: float = 20.0, interval: float = 0.01,
                      context: Callable[[], str] | None = None) -> T:
    """`wait_until` for a test that shares its event loop with what it waits for: it yields between probes."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, timeout, value, context))
        await asyncio.sleep(interval)


def _gave_up(what: str, timeout: float, value: object, context: Callable[[], str] | None) -> str:
    message = f"gave up after {timeout:g}s waiting for {what}; last seen: {value!r}"
    return message + (f"\n{context()}" if context is not None else "")
