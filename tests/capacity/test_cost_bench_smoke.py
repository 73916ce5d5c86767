"""bench/cost.py runs end to end (--quick) and ends with a well-formed RESULT line."""

from __future__ import annotations

import pytest

from tests.benchrun import run_quick


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_cost_benchmark_prints_a_result_line() -> None:
    lines, values = run_quick(
        "cost.py", ("cost_ratio_vs_ondemand", "idle_gpu_fraction", "scale_down_s"), timeout=110
    )
    ratio, idle, scale_down = values.values()
    assert 0 < ratio < 1  # spot nodes that scale to zero cost less than always-on ones
    assert 0 <= idle < 1
    # Back to zero after the grace period (120 s), within a tick or two (15 s each).
    assert 120 <= scale_down <= 150
    assert any(line.startswith("cost (USD)") for line in lines)
