"""Admission control for a server's expensive calls: a bounded queue in front of slots.

At most `slots` calls run at once and at most `max_waiting` wait for one; a call beyond that
is refused at once with ResourceExhausted (RESOURCE_EXHAUSTED, HTTP 429), so a client backs
off and retries instead of timing out in a queue it cannot see.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.common.errors import ResourceExhausted


class Admission:
    def __init__(self, slots: int, max_waiting: int, what: str, setting: str) -> None:
        """what names the calls in the refusal ("Score, vLLM and tool-use calls"), setting
        the variable that bounds the queue."""
        if slots < 1 or max_waiting < 0:
            raise ValueError("slots must be >= 1 and max_waiting >= 0")
        self.slots, self.max_waiting = slots, max_waiting
        self.what, self.setting = what, setting
        self._free = asyncio.Semaphore(slots)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one slot for the body; ResourceExhausted at once when the queue is full."""
        if self._free.locked() and self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"{self.slots} {self.what} are running and {self.waiting} wait "
                f"({self.setting}); retry in a few seconds"
            )
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._free.release()
