"""bench/pbt.py --quick: kubetune's side of the PBT bench (Ray Tune runs only in the full
bench: it is not in the dev environment, and starting it takes longer than the rest)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_bench_prints_every_method_and_the_result_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pbt.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    match = re.fullmatch(
        r"RESULT pbt_regret_ratio_vs_ray_pbt=(\S+) pbt_regret_ratio_vs_asha=(\S+)", lines[-1]
    )
    assert match, lines[-1]
    assert match[1] == "nan"  # no Ray in --quick, said so rather than made up
    assert math.isfinite(float(match[2])) and 0 < float(match[2]) <= 0.5
    for method in ("kubetune PBT", "kubetune ASHA+TPE (fixed)", "best fixed (dense grid)"):
        assert sum(line.strip().startswith(method) for line in lines) == 2, method
    # Pod starts per generation: the initial population starts once each, every start
    # is counted in some generation, and no member that was not replaced restarted.
    starts = [float(m[1]) for m in re.finditer(r"starts (\S+) \(", done.stdout)]
    generations = re.findall(
        r"pod starts per generation (.*); winners restarted (\d+)", done.stdout
    )
    assert len(starts) == len(generations) == 2, done.stdout
    for total, (shown, restarts) in zip(starts, generations, strict=True):
        per = [float(part.split(":")[1]) for part in shown.split()]
        assert per[0] == 8.0 and len(per) >= 2 and restarts == "0"
        assert abs(sum(per) - total) < 0.2, (per, total)
