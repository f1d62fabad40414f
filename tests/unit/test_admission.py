"""Admission: slots, a bounded queue, and an immediate refusal beyond it."""

from __future__ import annotations

import asyncio

import pytest

from services.common.admission import Admission
from services.common.errors import ResourceExhausted


def test_a_call_beyond_the_slots_and_the_queue_is_refused_at_once() -> None:
    async def scenario() -> list[str]:
        admission = Admission(1, 1, "Judge calls", "KILN_MAX_WAITING_JUDGMENTS")
        events: list[str] = []
        release = asyncio.Event()

        async def call(name: str) -> None:
            async with admission.slot():
                events.append(f"{name} runs")
                await release.wait()
            events.append(f"{name} done")

        first = asyncio.create_task(call("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(call("second"))
        await asyncio.sleep(0)
        assert admission.waiting == 1
        with pytest.raises(ResourceExhausted) as refused:
            async with admission.slot():
                events.append("third runs")
        events.append(str(refused.value))
        release.set()
        await asyncio.gather(first, second)
        assert admission.waiting == 0
        async with admission.slot():  # a free slot again
            events.append("fourth runs")
        return events

    assert asyncio.run(scenario()) == [
        "first runs",
        "1 Judge calls are running and 1 wait (KILN_MAX_WAITING_JUDGMENTS); retry in a few seconds",
        "first done",
        "second runs",
        "second done",
        "fourth runs",
    ]


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    async def scenario() -> int:
        admission = Admission(1, 1, "calls", "X")
        async with admission.slot():
            waiter = asyncio.create_task(admission.slot().__aenter__())
            await asyncio.sleep(0)
            assert admission.waiting == 1
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        return admission.waiting

    assert asyncio.run(scenario()) == 0
