"""The deadline wheel (ukproxy/proxy/deadline_wheel.py) on a real uvloop loop: never early, at most a bucket
late, removed deadlines never fire, and a deadline armed again from its own callback fires again."""

from __future__ import annotations

import asyncio

import uvloop

from ukproxy.proxy.deadline_wheel import RESOLUTION, DeadlineWheel

BOUND = 5.0  # seconds any test waits for a deadline at most


class Item:
    def __init__(self, loop: asyncio.AbstractEventLoop, when: float):
        self.loop = loop
        self.when = when
        self.fired_at: list[float] = []
        self.done = loop.create_future()
        self.again: tuple[DeadlineWheel, float] | None = None  # (wheel, seconds): arm once more when fired

    def deadline_reached(self) -> None:
        self.fired_at.append(self.loop.time())
        if self.again is not None:
            wheel, after = self.again
            self.again = None
            self.when = self.loop.time() + after
            wheel.add(self, self.when)
            return
        if not self.done.done():
            self.done.set_result(None)


class Broken:
    def deadline_reached(self) -> None:
        raise RuntimeError("a bug in one connection")


def run(coro) -> None:  # type: ignore[no-untyped-def]
    uvloop.run(coro)


def test_deadlines_fire_in_order_never_early_and_within_a_bucket():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        now = loop.time()
        items = [Item(loop, now + delay) for delay in (0.3, 0.05, 0.2, 0.05)]
        for item in items:
            wheel.add(item, item.when)
        await asyncio.wait_for(asyncio.gather(*(i.done for i in items)), BOUND)
        for item in items:
            assert len(item.fired_at) == 1
            assert item.fired_at[0] >= item.when
            # a bucket late at most, plus the loop's own lateness on a loaded machine
            assert item.fired_at[0] - item.when < RESOLUTION + 0.5
        order = sorted(items, key=lambda i: i.fired_at[0])
        assert [i.when for i in order] == sorted(i.when for i in items)
        assert not wheel.buckets and not wheel.due and wheel.timer is None

    run(main())


def test_removed_deadline_never_fires_and_an_earlier_one_moves_the_timer():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        now = loop.time()
        late, removed, early = Item(loop, now + 0.4), Item(loop, now + 0.1), Item(loop, now + 0.05)
        wheel.add(late, late.when)
        bucket = wheel.add(removed, removed.when)
        wheel.add(early, early.when)  # earlier than the armed timer: it is moved
        wheel.remove(removed, bucket)
        await asyncio.wait_for(asyncio.gather(early.done, late.done), BOUND)
        assert removed.fired_at == []
        assert early.fired_at[0] < late.fired_at[0]

    run(main())


def test_a_deadline_armed_again_from_its_callback_fires_again_and_a_failing_one_spares_the_rest():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(loop)
        now = loop.time()
        item = Item(loop, now + 0.05)
        item.again = (wheel, 0.1)
        wheel.add(Broken(), now + 0.05)  # same bucket: its exception is logged, the item still fires
        wheel.add(item, item.when)
        await asyncio.wait_for(item.done, BOUND)
        assert len(item.fired_at) == 2
        assert item.fired_at[1] >= item.when

    run(main())
