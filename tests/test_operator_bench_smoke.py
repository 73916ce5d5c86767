"""The operator-overhead benchmark runs end to end (--quick) and ends with a RESULT line."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(
    r"^RESULT report_to_decision_p99_ms=(\S+) trial_turnaround_p50_ms=(\S+) "
    r"operator_rss_mb=(\S+)$"
)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(170)
def test_quick_operator_benchmark_prints_a_result_line() -> None:
    # The benchmark starts its own control plane; without the binaries the fixture skips.
    from tests.cluster.fixtures import _binaries_or_skip

    _binaries_or_skip()
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "operator_overhead.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=160,
    )
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    for text in match.groups():
        value = float(text)
        assert math.isfinite(value) and value > 0, lines[-1]
    assert any(line.startswith("report->decision latency: p50") for line in lines)
    assert any(line.startswith("trial turnaround") and "p99" in line for line in lines)
