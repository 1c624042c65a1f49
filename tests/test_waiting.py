"""The tests' one wait: it returns the accepted value, and on giving up names what it awaited and what it saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import await_until, wait_until


def test_returns_the_first_accepted_value() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter), "the count to reach 3", accept=lambda n: n >= 3, interval=0) == 3


def test_gives_up_naming_what_it_awaited_the_last_value_and_the_context() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError) as failure:
        wait_until(lambda: next(counter), "a negative count", accept=lambda n: n < 0, timeout=0.2, interval=0.01,
                   context=lambda: "the log tail")
    message = str(failure.value)
    assert message.startswith("gave up after 0.2s waiting for a negative count; last seen: ")
    last = int(message.split("last seen: ")[1].split("\n")[0])
    assert last >= 2 and message.endswith("\nthe log tail")


async def test_the_async_form_lets_the_loop_run_what_it_waits_for() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)
    assert await await_until(done.is_set, "the timer to fire", timeout=5)
    with pytest.raises(AssertionError, match=r"gave up after 0\.1s waiting for never; last seen: False"):
        await await_until(lambda: False, "never", timeout=0.1)
