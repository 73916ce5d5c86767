"""Each experiment is stepped on its own task: a slow or failing one delays no other, and
a failing one is retried with backoff (kubetune.operator.resync)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kubetune.operator.resync import Resync, backoff


class Controller:
    def __init__(self, name: str, seconds: float = 0.0, fails: int = 0) -> None:
        self.namespace, self.name = "ns", name
        self.seconds, self.fails = seconds, fails
        self.steps: list[float] = []

    async def step(self) -> None:
        self.steps.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.seconds)
        if self.fails:
            self.fails -= 1
            raise TimeoutError("the API server is slow")


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    assert [backoff(n, 5.0, 300.0) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_a_slow_experiment_delays_no_other() -> None:
    async def scenario() -> tuple[int, int]:
        resync = Resync(interval=0.02)
        slow, fast = Controller("slow", seconds=10.0), Controller("fast")
        resync.start(slow)
        resync.start(fast)
        await asyncio.sleep(0.5)
        resync.close()
        return len(slow.steps), len(fast.steps)

    slow, fast = asyncio.run(scenario())
    assert slow == 1 and fast >= 10  # one loop stepping both in turn would give fast 1


def test_a_failing_experiment_is_retried_with_backoff_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delays: list[float] = []

    async def scenario() -> Controller:
        async def sleep(seconds: float) -> None:
            delays.append(seconds)
            await asyncio.sleep(0)

        resync = Resync(interval=5.0, max_backoff=300.0, sleep=sleep)
        failing = Controller("failing", fails=3)
        resync.start(failing)
        while len(delays) < 6:
            await asyncio.sleep(0)
        resync.close()
        return failing

    with caplog.at_level(logging.WARNING, "kubetune.operator.resync"):
        failing = asyncio.run(scenario())
    assert delays[:6] == [5.0, 10.0, 20.0, 40.0, 5.0, 5.0]
    assert len(failing.steps) >= 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "ns/failing failed (3 in a row; next try in 40 s)" in lines[-1]
