from __future__ import annotations

import asyncio

import pytest

from kubetune.operator.coalesce import CoalescedWriter, each_at_most


async def test_each_flush_waits_for_a_write_that_saw_its_change() -> None:
    state = {"value": 0}
    durable: list[int] = []
    active = 0
    peak = 0

    async def write() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        snapshot = state["value"]
        await asyncio.sleep(0.01)
        durable.append(snapshot)
        active -= 1

    writer = CoalescedWriter(write)

    async def change(value: int) -> None:
        state["value"] = value
        await writer.flush()
        assert durable and durable[-1] >= value  # acknowledged only once durable

    await asyncio.gather(*(change(v) for v in range(1, 51)))
    assert peak == 1  # never two writes of one object at once
    assert durable == sorted(durable) and durable[-1] == 50
    assert len(durable) < 10  # fifty changes, a handful of writes


async def test_a_failed_write_raises_to_its_callers() -> None:
    async def write() -> None:
        raise RuntimeError("API server said no")

    writer = CoalescedWriter(write)
    try:
        await writer.flush()
    except RuntimeError as error:
        assert "said no" in str(error)
    else:
        raise AssertionError("the failure was swallowed")


async def test_writers_sharing_slots_run_that_many_writes_at_once_and_all_complete() -> None:
    """An experiment's end writes every paused trial again: each write builds its status
    when it runs, so the slots bound how many statuses exist at once (bench/scale.py's
    peak memory was there), and every flush still returns durable."""
    slots = asyncio.Semaphore(4)
    running = 0
    peak = 0
    written: list[int] = []

    def make(number: int) -> CoalescedWriter:
        async def write() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.005)
            written.append(number)
            running -= 1

        return CoalescedWriter(write, slots)

    writers = [make(n) for n in range(40)]
    await asyncio.gather(*(w.flush() for w in writers), *(w.flush() for w in writers[:10]))
    assert peak == 4
    assert sorted(set(written)) == list(range(40))


async def test_a_finished_write_keeps_nothing_of_its_callers_context_alive() -> None:
    """The write's task copies the caller's context (kopf binds the cause there: the pod's
    body, its patch); a writer lives as long as its trial, so keeping the done task would
    keep that for the experiment's life."""
    import contextvars
    import gc
    import weakref

    class Cause:
        pass

    bound: contextvars.ContextVar[Cause] = contextvars.ContextVar("cause")

    async def write() -> None:
        await asyncio.sleep(0)

    writer = CoalescedWriter(write)

    async def handler() -> weakref.ref[Cause]:
        cause = Cause()
        bound.set(cause)
        await writer.flush()
        return weakref.ref(cause)

    gone = await asyncio.create_task(handler())
    for _ in range(3):  # the loop's done-callbacks of both tasks run in their contexts
        await asyncio.sleep(0)
    gc.collect()
    assert gone() is None
    await writer.flush()  # and it still writes


async def test_each_at_most_starts_only_that_many_calls_and_makes_every_one_once() -> None:
    """10,000 trials written at an experiment's end: a pending call (task, context,
    coroutine chain) for each at once was a memory peak that grew with the trials; only
    `at_once` calls may exist at a time, and each item is called exactly once."""
    started: list[int] = []
    live = 0
    peak = 0

    async def call(item: int) -> None:
        nonlocal live, peak
        started.append(item)
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.001 * (item % 3))
        live -= 1

    await each_at_most(4, range(50), call)
    assert peak == 4
    assert sorted(started) == list(range(50))
    await each_at_most(4, [], call)  # nothing to do: returns
    assert len(started) == 50


async def test_a_writer_is_idle_only_with_no_write_running_or_owed() -> None:
    """StatusWriter lets a trial's writer go once idle (one kept per trial ever written
    was about half a KB a trial): never while a write runs, nor after a failed one."""
    gate = asyncio.Event()
    fail = True

    async def write() -> None:
        await gate.wait()
        if fail:
            raise RuntimeError("refused")

    writer = CoalescedWriter(write)
    assert writer.idle
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)
    assert not writer.idle
    gate.set()
    with pytest.raises(RuntimeError):
        await flushing
    assert not writer.idle  # the change is still owed
    fail = False
    await writer.flush()
    assert writer.idle
