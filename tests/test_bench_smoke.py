"""The search-quality benchmark runs end to end and ends with a well-formed RESULT line."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(
    r"^RESULT bayesian_regret_ratio_vs_optuna_gp=(\S+) bayesian_h6_regret_p4=(\S+) "
    r"tpe_regret_ratio_vs_optuna_tpe=(\S+) asha_resource_ratio_vs_optuna_sha_p4=(\S+) "
    r"asha_resource_ratio_vs_restart_hyperband=(\S+)$"
)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_benchmark_prints_a_result_line():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "search_quality.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=85,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    for text in match.groups():
        value = float(text)
        assert math.isfinite(value) and value > 0, text
    # Every kubetune row sits beside the Optuna sampler it wraps, in every setting.
    for setting in ("p=1", "p=4 sync", "p=4 async"):
        rows = [line for line in lines if line.startswith("Hartmann-6 (") and setting in line]
        assert any("kubetune bayesian" in r for r in rows), setting
        assert any("optuna GPSampler" in r for r in rows), setting
        assert any("optuna TPESampler" in r for r in rows), setting
    assert any("optuna TPE+SuccessiveHalvingPruner" in line for line in lines)
    assert any("hyperband, restarts (Katib)" in line for line in lines)
