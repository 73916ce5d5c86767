"""bench/warmstart.py runs end to end and ends with a well-formed RESULT line."""

from __future__ import annotations

import pytest

from tests.benchrun import run_quick


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_warm_start_bench_prints_a_result_line() -> None:
    lines, values = run_quick("warmstart.py", ["warmstart_regret_ratio_vs_cold"], timeout=85)
    assert values["warmstart_regret_ratio_vs_cold"] > 0, lines[-1]
    rows = [line for line in lines if line.startswith("bayesian ")]
    for label in ("parent, 12 trials", "child, 12 trials, transfer", "cold, 12", "cold, 24"):
        assert any(label in row for row in rows), (label, rows)
    assert "warm-start trials loaded per child: [12]" in "\n".join(lines)
