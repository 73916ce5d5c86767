"""Each experiment stepped on its own: a slow or failing one delays no other.

Events drive the controllers; this keeps each level in between (time limits, pods
waiting for quota, writes that failed). One task per experiment steps it every
`interval` seconds; a failure is counted and logged (one short, rate-limited line) and
the step is retried after a backoff that doubles up to `max_backoff`, then returns to
the interval after a success.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from kubetune import observability
from kubetune.httpserver import OneLineLog

logger = logging.getLogger(__name__)
RESYNC_LOG = OneLineLog(logger, burst=10)


class Steppable(Protocol):
    namespace: str
    name: str

    async def step(self) -> None: ...


def backoff(failures: int, interval: float, max_backoff: float) -> float:
    """Seconds before the next step after `failures` failures in a row."""
    if failures == 0:
        return interval
    return min(interval * 2.0**failures, max_backoff)


class Resync:
    def __init__(
        self,
        interval: float = 5.0,
        max_backoff: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: observability.Observer | None = None,
    ) -> None:
        self.observer = observer if observer is not None else observability.Observer(False)
        self.interval = interval
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.failures: dict[tuple[str, str], int] = {}

    def start(self, controller: Steppable) -> None:
        """Step `controller` from now on (again: the old task is replaced)."""
        key = (controller.namespace, controller.name)
        self.stop(key)
        self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key, controller))

    def stop(self, key: tuple[str, str]) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.failures.pop(key, None)

    def close(self) -> None:
        for key in list(self.tasks):
            self.stop(key)

    async def _loop(self, key: tuple[str, str], controller: Steppable) -> None:
        while True:
            failures = self.failures.get(key, 0)
            await self.sleep(backoff(failures, self.interval, self.max_backoff))
            observability.bind_log_context(*key)
            try:
                await controller.step()
            except Exception as error:
                self.failures[key] = failures + 1
                self.observer.reconcile_error("resync", error)
                wait = backoff(failures + 1, self.interval, self.max_backoff)
                RESYNC_LOG.warning(
                    "resync of %s/%s failed (%d in a row; next try in %.0f s)",
                    *key,
                    failures + 1,
                    wait,
                    exc_info=error,
                )
            else:
                self.failures[key] = 0
