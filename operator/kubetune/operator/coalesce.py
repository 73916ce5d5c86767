"""Coalesced writes: many callers, one write in flight per object, none acknowledged early.

`flush()` returns once a write that *started after the call* has completed, so the
caller's change is durable; callers that arrive while a write is in flight share the
next one. Writes of one object never overlap, so an older snapshot can never land
after a newer one. Writers that share `slots` (one experiment's objects) have at most
that many writes running: a write builds what it sends when it runs, so a thousand
trials to write at once (an experiment's end) hold that many statuses, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class CoalescedWriter:
    def __init__(
        self, write: Callable[[], Awaitable[None]], slots: asyncio.Semaphore | None = None
    ) -> None:
        self._write = write
        self._slots = slots
        self._requested = 0
        self._completed = 0
        self._running: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """No write running or asked for: the writer may be let go (a new one for the
        same object can start no write that overlaps one of this one's)."""
        return self._running is None and self._completed >= self._requested

    async def flush(self) -> None:
        self._requested += 1
        wanted = self._requested
        while self._completed < wanted:
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(self._run(self._requested))
            await asyncio.shield(self._running)

    async def _run(self, generation: int) -> None:
        try:
            async with self._slots or contextlib.nullcontext():
                await self._write()
            self._completed = max(self._completed, generation)
        finally:
            # A finished task keeps the context it was created in, and with it the
            # caller's kopf cause (the pod's body, its patch, a logger): about 30 KB
            # per trial for the experiment's life if it stayed referenced here.
            self._running = None


async def each_at_most(
    at_once: int, items: Iterable[T], call: Callable[[T], Awaitable[None]]
) -> None:
    """`await call(item)` for every item, `at_once` at a time. An experiment's end writes
    every trial; a task for each, all waiting for the writers' slots, held a task, its
    context and a coroutine chain per trial (about 13 MB at 2,000 trials in
    bench/scale.py, a peak that grows with the trials); here `at_once` of them at most."""
    pending = list(items)
    queue = iter(pending)

    async def worker() -> None:
        for item in queue:  # one iterator shared: each item is taken once
            await call(item)

    await asyncio.gather(*(worker() for _ in range(min(at_once, len(pending)))))
