"""bench/scale.py runs end to end (--quick) and ends with issue 14's RESULT line."""

from __future__ import annotations

import pytest

from tests.benchrun import run_quick

KEYS = (
    "operator_rss_mb_10k",
    "largest_object_kib",
    "restart_rebuild_s_10k",
    "report_p99_ms_open_loop",
    "trial_turnaround_p50_ms_open_loop",
    "api_writes_per_report",
    "report_throughput_ratio_vs_raw_patch",
)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_scale_benchmark_prints_a_result_line() -> None:
    # The benchmark starts its own control plane; without the binaries the fixture skips.
    from tests.cluster.fixtures import _binaries_or_skip

    _binaries_or_skip()
    lines, values = run_quick("scale.py", KEYS, timeout=290)
    assert all(value > 0 for value in values.values()), lines[-1]
    assert any(line.startswith("N=12 parallel=6") for line in lines)
    assert any(line.startswith("restart at 6 trials: rebuilt in") for line in lines)
