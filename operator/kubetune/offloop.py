"""Sampling off the event loop, in a worker process.

Optuna's GP sampler can take seconds and holds the GIL for much of it; in a thread it
would still delay every report the loop is answering. A worker process does not.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from kubetune.processes import start_helper
from kubetune.samplers import Suggestion, suggest, suggest_many

# One thread for torch (Optuna's GP sampler), read when torch is first imported: on a
# busy machine its default of one thread per core made suggestions 3-4 times slower
# (bench/search_quality.py). Not imported here: most samplers never need it.
_WORKER_ENV = {"OMP_NUM_THREADS": "1"}


class SuggestionWorker:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process with an event loop and threads is unsafe.
            context = multiprocessing.get_context("spawn")
            # The initializer lives in a light module, so it runs (and the worker is tied
            # to kubetune's life) before the samplers' heavy imports.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=start_helper,
                initargs=(os.getpid(), _WORKER_ENV),
            )
        return self._pool

    async def suggest(self, request: tuple[Any, ...]) -> Suggestion | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), suggest, *request)
        except BrokenProcessPool:
            self._pool = None  # the worker died (OOM, say): one fresh try
            return await loop.run_in_executor(self._executor(), suggest, *request)

    async def suggest_many(self, request: tuple[Any, ...]) -> list[Suggestion | None]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), suggest_many, *request)
        except BrokenProcessPool:
            self._pool = None
            return await loop.run_in_executor(self._executor(), suggest_many, *request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
