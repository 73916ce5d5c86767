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
    r"^RESULT hartmann6_regret_ratio_vs_random=(\S+) "
    r"multifidelity_resource_ratio_vs_optuna_asha=(\S+)$"
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
    assert any("Hartmann-6" in line for line in lines)
