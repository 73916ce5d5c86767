"""The search-quality benchmark runs end to end and ends with a well-formed RESULT line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.benchrun import ROOT, load_bench, run_quick

KEYS = (
    "bayesian_regret_ratio_vs_optuna_gp",
    "bayesian_h6_regret_p4",
    "tpe_regret_ratio_vs_optuna_tpe",
    "asha_resource_ratio_vs_optuna_sha_p4",
    "asha_resource_ratio_vs_restart_hyperband",
)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_benchmark_prints_a_result_line():
    lines, values = run_quick("search_quality.py", KEYS, timeout=85)
    assert all(value > 0 for value in values.values()), lines[-1]
    # Every kubetune row sits beside the Optuna sampler it wraps, in every setting.
    for setting in ("p=1", "p=4 sync", "p=4 async"):
        rows = [line for line in lines if line.startswith("Hartmann-6 (") and setting in line]
        assert any("kubetune bayesian" in r for r in rows), setting
        assert any("optuna GPSampler" in r for r in rows), setting
        assert any("optuna TPESampler" in r for r in rows), setting
    assert any("optuna TPE+SuccessiveHalvingPruner" in line for line in lines)
    assert any("hyperband, restarts (Katib)" in line for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_single_fidelity_only_run_prints_the_figures_it_measured():
    """`--single-only` skips multi-fidelity: its RESULT line has the sampler figures, and a
    line before it names the two it could not measure."""
    lines, values = run_quick("search_quality.py", KEYS[:3], timeout=85, extra=["--single-only"])
    assert all(value > 0 for value in values.values()), lines[-1]
    assert lines[-2] == f"# partial RESULT line: not measured in this run: {', '.join(KEYS[3:])}"
    assert not any("hyperband, restarts (Katib)" in line for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_references_run_beside_the_result_rows_on_their_seeds():
    """`--references 1`: Optuna's GP one at a time and BoTorch at p=4 on the RESULT line's
    first seed, each with kubetune's regret divided by it; the RESULT line keeps its form."""
    lines, values = run_quick(
        "search_quality.py", KEYS[:3], timeout=115, extra=["--single-only", "--references", "1"]
    )
    assert ", botorch " in lines[0], lines[0]

    def per_seed(start: int) -> list[float]:
        assert "per seed:" in lines[start + 1], lines[start : start + 2]
        return [float(v) for v in lines[start + 1].split("per seed:")[1].split()]

    def row(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    references = row("### References")
    gp = row("optuna GPSampler, p=1 (one at a time)")
    botorch = row("botorch qLogNEI, Ax's defaults, p=4 sync")
    assert references < gp < botorch, (references, gp, botorch)
    mine = values["bayesian_h6_regret_p4"]  # --quick: the RESULT rows run seed 0 only
    # The GP reference is the very run of the table's own p=1 row for the same seed.
    table_gp = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("Hartmann-6 (") and " p=1 " in line and "optuna GPSampler" in line
    )
    assert per_seed(gp) == per_seed(table_gp)
    for start in (gp, botorch):
        (regret,) = per_seed(start)
        ratio = float(lines[start].split()[-2])
        assert ratio == pytest.approx(mine / regret, abs=0.006), lines[start]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_botorch_reference_is_deterministic_and_improves_on_its_initial_design():
    """The BoTorch reference is a real optimiser: the same seed gives the same regret, and its
    BO rounds find better than the centre and Sobol points it starts from (a sign error, BoTorch
    maximising the objective, would not)."""
    bench = load_bench("search_quality.py")
    h6 = bench.PROBLEMS["H6"]
    initial = bench.botorch_run(h6, 3, bench.AX_INITIAL_TRIALS, 4)
    optimised = bench.botorch_run(h6, 3, 21, 4)
    assert optimised == bench.botorch_run(h6, 3, 21, 4)
    assert optimised < initial - 0.3, (optimised, initial)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--references", "2"], "--references: 2 (more than the RESULT line's seeds, 1)"),
        (["--references", "-1"], "--references: -1 (a number of seeds, at least 0)"),
        (["--references", "1", "--problems", "mixed"], "add H6 to --problems"),
        (["--problems", "h6"], "--problems: h6 (known: H6,H6n,mixed)"),
        (["--algorithms", "bayesian,gp"], "--algorithms: gp (known: bayesian,tpe,"),
        (["--headline-seeds", "0"], "--headline-seeds: 0 (at least 1)"),
        (["--trials", "-3"], "--trials: -3 (at least 1)"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_wrong(extra: list[str], message: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "search_quality.py"), "--quick", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert message in completed.stderr
