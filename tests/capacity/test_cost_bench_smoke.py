"""bench/cost.py runs end to end (--quick) and ends with a well-formed RESULT line."""

from __future__ import annotations

import pytest

from tests.benchrun import run_quick

KEYS = (
    "cost_ratio_vs_autoscaled_ondemand",
    "cost_ratio_vs_spot_restart",
    "idle_gpu_fraction",
    "lost_gpu_seconds_per_interruption",
    "lost_gpu_seconds_per_interruption_no_notice",
    "ledger_error",
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_cost_benchmark_prints_a_result_line() -> None:
    lines, values = run_quick("cost.py", KEYS, timeout=110)
    # Spot nodes that scale to zero cost less than on-demand ones scaled by the cluster
    # autoscaler; resuming from checkpoints costs no more than starting over.
    assert 0 < values["cost_ratio_vs_autoscaled_ondemand"] < 1
    assert 0 < values["cost_ratio_vs_spot_restart"] <= 1.0
    assert 0 <= values["idle_gpu_fraction"] < 1
    # kubetune's own ledger (capacity.accounting) agrees with the bench's computation.
    assert values["ledger_error"] <= 0.01
    # A reclaim notice loses the checkpoint's write, not the steps since the last rung.
    assert values["lost_gpu_seconds_per_interruption"] < 60
    assert any("ledger (USD)" in line for line in lines)
