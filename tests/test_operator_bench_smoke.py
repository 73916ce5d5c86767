"""The operator-overhead benchmark runs end to end (--quick) and ends with a RESULT line."""

from __future__ import annotations

import pytest

from tests.benchrun import run_quick

KEYS = ("report_to_decision_p99_ms", "trial_turnaround_p50_ms", "operator_rss_mb")


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(170)
def test_quick_operator_benchmark_prints_a_result_line() -> None:
    # The benchmark starts its own control plane; without the binaries the fixture skips.
    from tests.cluster.fixtures import _binaries_or_skip

    _binaries_or_skip()
    lines, values = run_quick("operator_overhead.py", KEYS, timeout=160)
    assert all(value > 0 for value in values.values()), lines[-1]
    assert any(line.startswith("report->decision latency: p50") for line in lines)
    assert any(line.startswith("trial turnaround") and "p99" in line for line in lines)
