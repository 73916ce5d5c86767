"""bench/scale.py runs end to end (--quick) and ends with issue 14's RESULT line."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "operator_rss_mb_10k",
    "largest_object_kib",
    "restart_rebuild_s_10k",
    "report_p99_ms_open_loop",
    "trial_turnaround_p50_ms_open_loop",
    "api_writes_per_report",
    "report_throughput_ratio_vs_raw_patch",
)
RESULT = re.compile("^RESULT " + " ".join(f"{key}=(\\S+)" for key in KEYS) + "$")


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_scale_benchmark_prints_a_result_line() -> None:
    # The benchmark starts its own control plane; without the binaries the fixture skips.
    from tests.cluster.fixtures import _binaries_or_skip

    _binaries_or_skip()
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=290,
    )
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    for text in match.groups():
        value = float(text)
        assert math.isfinite(value) and value > 0, lines[-1]
    assert any(line.startswith("N=12 parallel=6") for line in lines)
    assert any(line.startswith("restart at 6 trials: rebuilt in") for line in lines)
