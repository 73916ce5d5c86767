"""The operator hands freed heap pages back to the kernel (kubetune/operator/trim.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from kubetune.operator import trim

# A heap left fragmented, as churn leaves it: 100,000 blocks of 2 KB (malloc'd, not
# Python's small-object arenas), one in fifty kept. glibc keeps the freed pages resident.
FRAGMENT_THEN_TRIM = """
import os
from kubetune.operator.trim import release_freed_memory

def rss_mb():
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]
kept = blocks[::50]
del blocks
before = rss_mb()
assert release_freed_memory()
print(before, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_pages_of_a_fragmented_heap_go_back_to_the_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT_THEN_TRIM], capture_output=True, text=True, check=True
    ).stdout
    before, after = (float(v) for v in out.split())
    assert before - after > 100, (before, after)  # ~190 MB of the ~200 MB freed


async def test_the_operator_trims_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(trim, "_MALLOC_TRIM", calls.append)
    task = asyncio.create_task(trim.release_periodically(0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(calls) >= 3 and set(calls) == {0}
