"""bench/cost.py runs end to end (--quick) and ends with a well-formed RESULT line."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(
    r"^RESULT cost_ratio_vs_ondemand=(\S+) idle_gpu_fraction=(\S+) scale_down_s=(\S+)$"
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_cost_benchmark_prints_a_result_line() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cost.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    ratio, idle, scale_down = (float(text) for text in match.groups())
    assert all(math.isfinite(v) for v in (ratio, idle, scale_down))
    assert 0 < ratio < 1  # spot nodes that scale to zero cost less than always-on ones
    assert 0 <= idle < 1
    # Back to zero after the grace period (120 s), within a tick or two (15 s each).
    assert 120 <= scale_down <= 150
    assert any(line.startswith("cost (USD)") for line in lines)
