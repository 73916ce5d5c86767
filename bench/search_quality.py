"""Search quality of kubetune's samplers and ASHA scheduler, side by side with Optuna.

Everything runs in this one process, on the same seeds, with no data to download:

1. Single fidelity, simple regret after N trials (default 60) on Branin (2-D, optimum
   0.397887) and Hartmann-6 (6-D, optimum -3.32237): kubetune `bayesian` and `tpe`, run
   through the virtual-clock simulator (`kubetune.simulate`) with 4 trials in parallel
   and no scheduler, against Optuna's TPESampler used directly (sequential ask/tell,
   default settings) and against random search (kubetune `random`, 4 in parallel).

2. Multi-fidelity, Augmented Hartmann (BoTorch's `AugmentedHartmann`: Hartmann-6 with
   alpha_1 lowered by 0.1 * (1 - s) at fidelity s in [0, 1]; s = 1 is Hartmann-6 itself).
   A trial's resource step r in 1..27 is fidelity s = r / 27; no noise. kubetune `asha`
   (tpe sampler, minResource 1, maxResource 27, eta 3, 4 in parallel, through the
   simulator) against Optuna used directly: TPESampler + SuccessiveHalvingPruner
   (min_resource=1, reduction_factor=3), sequential, a trial reporting its value at every
   step and stopping when `trial.should_prune()` says so. Both get the same budget in
   resource steps (every step any trial trains counts; trials are created until the budget
   is spent). Measured: the resource spent until the best full-fidelity (r = 27) value
   first comes within 0.5 of the optimum (the primary target, fixed before any run), and
   within 0.1 (secondary: Hartmann-6's second-best local minimum, -3.2032, is 0.119 away,
   so this means finding the global basin). A seed that never reaches a target counts as
   the full budget, and the table says how many seeds reached it. A reference row runs
   kubetune's ASHA one trial at a time, as Optuna runs here, to separate the cost of
   parallelism from the scheduler itself.

Regrets on these problems are bimodal (a search finds the global basin or stays in a
local one), so a handful of seeds gives ratios that swing by a factor of two: the table
prints medians and the ratios' standard errors as well. The default is 10 seeds, which
keeps a run under 15 minutes on a busy 2-core machine (the GP sampler is ~85% of the
time); `--seeds 20` or more gives tighter numbers.

The last line printed is
`RESULT hartmann6_regret_ratio_vs_random=<x> multifidelity_resource_ratio_vs_optuna_asha=<y>`
with x = kubetune bayesian mean regret / random mean regret (Hartmann-6, N trials) and
y = kubetune asha mean resource to the primary target / Optuna's mean resource to it.
Lower is better for both.

    .venv/bin/python bench/search_quality.py            # 10 seeds, 5-10 minutes on 2 cores
    .venv/bin/python bench/search_quality.py --quick    # smoke test, under a minute
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.pruners import SuccessiveHalvingPruner
from optuna.samplers import TPESampler

from kubetune.simulate import make_spec, simulate

optuna.logging.set_verbosity(optuna.logging.ERROR)
# One thread: the GP sampler's small linear algebra gains nothing from more, and on a
# shared machine torch's spinning worker threads made it 3-4 times slower.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# ----- test functions -----------------------------------------------------------------

BRANIN_OPT = 0.397887
HARTMANN6_OPT = -3.32237

_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def branin(x1: float, x2: float) -> float:
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def augmented_hartmann(x: Sequence[float], fidelity: float) -> float:
    """BoTorch's AugmentedHartmann (noise-free): fidelity 1 is Hartmann-6."""
    alpha = _H_ALPHA.copy()
    alpha[0] -= 0.1 * (1.0 - fidelity)
    inner = np.sum(_H_A * (np.asarray(x, dtype=float) - _H_P) ** 2, axis=1)
    return float(-np.sum(alpha * np.exp(-inner)))


def hartmann6(x: Sequence[float]) -> float:
    return augmented_hartmann(x, 1.0)


@dataclass(frozen=True)
class Problem:
    name: str
    bounds: dict[str, tuple[float, float]]
    optimum: float
    f: Callable[[list[float]], float]


PROBLEMS = [
    Problem("Branin", {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}, BRANIN_OPT, lambda x: branin(*x)),
    Problem("Hartmann-6", {f"x{i}": (0.0, 1.0) for i in range(6)}, HARTMANN6_OPT, hartmann6),
]
HARTMANN_BOUNDS = PROBLEMS[1].bounds


def parameters(bounds: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"name": n, "type": "float", "min": lo, "max": hi} for n, (lo, hi) in bounds.items()]


def point(params: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> list[float]:
    return [float(params[name]) for name in bounds]


# ----- single fidelity ------------------------------------------------------------------


def kubetune_best(problem: Problem, algorithm: str, seed: int, trials: int) -> float:
    spec = make_spec(
        parameters(problem.bounds),
        algorithm={"name": algorithm, "seed": seed},
        budget={"maxTrials": trials, "parallelTrials": 4},
        name=f"{algorithm}-{seed}",
    )
    result = simulate(spec, lambda p, step: problem.f(point(p, problem.bounds)), max_steps=1)
    assert result.best_value is not None and result.full_fidelity_evaluations == trials
    return result.best_value


def optuna_tpe_best(problem: Problem, seed: int, trials: int) -> float:
    study = optuna.create_study(direction="minimize", sampler=TPESampler(seed=seed))
    for _ in range(trials):
        trial = study.ask()
        x = [trial.suggest_float(name, lo, hi) for name, (lo, hi) in problem.bounds.items()]
        study.tell(trial, problem.f(x))
    return study.best_value


BAYESIAN, RANDOM = "kubetune bayesian (p=4)", "random (kubetune, p=4)"
SINGLE_METHODS: list[tuple[str, Callable[[Problem, int, int], float]]] = [
    (BAYESIAN, lambda pr, s, n: kubetune_best(pr, "bayesian", s, n)),
    ("kubetune tpe (p=4)", lambda pr, s, n: kubetune_best(pr, "tpe", s, n)),
    ("optuna TPESampler (seq.)", optuna_tpe_best),
    (RANDOM, lambda pr, s, n: kubetune_best(pr, "random", s, n)),
]


# ----- multi-fidelity -------------------------------------------------------------------

MAX_RESOURCE = 27
ASHA_P4, OPTUNA_SHA = "kubetune asha+tpe (p=4)", "optuna TPE+SuccessiveHalving"


def mf_objective(params: dict[str, Any], step: int) -> float:
    return augmented_hartmann(point(params, HARTMANN_BOUNDS), step / MAX_RESOURCE)


@dataclass(frozen=True)
class MFRun:
    trajectory: list[tuple[int, float]]  # (resource spent, best full-fidelity value so far)
    resource: int
    trials: int

    def resource_to(self, target: float, budget: int) -> tuple[int, bool]:
        for resource, best in self.trajectory:
            if best <= target:
                return resource, True
        return budget, False

    @property
    def final(self) -> float:
        return self.trajectory[-1][1] if self.trajectory else math.inf


def kubetune_asha(seed: int, budget: int, parallel: int = 4) -> MFRun:
    spec = make_spec(
        parameters(HARTMANN_BOUNDS),
        algorithm={"name": "tpe", "seed": seed},
        scheduler={
            "name": "asha",
            "resource": "step",
            "minResource": 1,
            "maxResource": MAX_RESOURCE,
            "reductionFactor": 3,
        },
        budget={"maxTrials": 100_000, "parallelTrials": parallel},
        name=f"asha-{seed}",
    )
    result = simulate(spec, mf_objective, resource_budget=budget)
    trajectory = [(p.resource, p.best) for p in result.trajectory]
    return MFRun(trajectory, result.resource, len(result.engine.trials))


def optuna_sha(seed: int, budget: int) -> MFRun:
    study = optuna.create_study(
        direction="minimize",
        sampler=TPESampler(seed=seed),
        pruner=SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    spent, best, trials = 0, math.inf, 0
    trajectory: list[tuple[int, float]] = []
    while spent < budget:
        trial = study.ask()
        trials += 1
        params = {n: trial.suggest_float(n, lo, hi) for n, (lo, hi) in HARTMANN_BOUNDS.items()}
        value = math.nan
        for step in range(1, MAX_RESOURCE + 1):
            if spent >= budget:
                break
            spent += 1
            value = mf_objective(params, step)
            trial.report(value, step)
            if step == MAX_RESOURCE:
                best = min(best, value)
                trajectory.append((spent, best))
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    return MFRun(trajectory, spent, trials)


# ----- running and printing -------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def ratio_with_error(a: Sequence[float], b: Sequence[float]) -> str:
    """mean(a) / mean(b) with a first-order standard error (seeds independent)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    if len(a) < 2 or ma == 0 or mb == 0:
        return f"{ma / mb:.3f}"
    ra = statistics.stdev(a) / math.sqrt(len(a)) / ma
    rb = statistics.stdev(b) / math.sqrt(len(b)) / mb
    return f"{ma / mb:.3f} ± {ma / mb * math.hypot(ra, rb):.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 10)")
    parser.add_argument("--quick", action="store_true", help="a small smoke-test run")
    parser.add_argument("--trials", type=int, default=None, help="single-fidelity trials")
    parser.add_argument("--budget", type=int, default=None, help="multi-fidelity resource")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (1 if args.quick else 10)))
    trials = args.trials or (14 if args.quick else 60)
    budget = args.budget or (250 if args.quick else 1500)
    started = time.perf_counter()

    print(f"# kubetune search quality: seeds 0..{len(seeds) - 1}, optuna {optuna.__version__}")
    print()
    print(
        f"## Single fidelity: simple regret after {trials} trials "
        f"(mean ± std over {len(seeds)} seeds; median)"
    )
    header = (
        f"{'method':<26} {'Branin':>17} {'median':>7} {'Hartmann-6':>17} {'median':>7} "
        f"{'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    regrets: dict[str, dict[str, list[float]]] = {}
    for label, run in SINGLE_METHODS:
        clock = time.perf_counter()
        regrets[label] = {
            problem.name: [run(problem, seed, trials) - problem.optimum for seed in seeds]
            for problem in PROBLEMS
        }
        cells = [
            f"{fmt(regrets[label][p.name]):>17} {statistics.median(regrets[label][p.name]):>7.3f}"
            for p in PROBLEMS
        ]
        print(f"{label:<26} {cells[0]} {cells[1]} {time.perf_counter() - clock:>7.1f}")
    print()

    primary, secondary = HARTMANN6_OPT + 0.5, HARTMANN6_OPT + 0.1
    print(
        f"## Multi-fidelity: Augmented Hartmann, r in 1..{MAX_RESOURCE} -> s = r/{MAX_RESOURCE}, "
        f"budget {budget} resource steps"
    )
    print(
        f"resource to best full-fidelity value <= {primary:.5f} (regret 0.5, primary) and "
        f"<= {secondary:.5f} (regret 0.1); a seed that misses counts as {budget}; "
        f"hit = seeds that reached it"
    )
    header = (
        f"{'method':<30} {'to regret 0.5':>15} {'median':>6} {'hit':>5} {'to regret 0.1':>15} "
        f"{'hit':>5} {'final regret':>14} {'full evals':>10} {'trials':>6} {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    mf_methods: list[tuple[str, Callable[[int, int], MFRun]]] = [
        (ASHA_P4, kubetune_asha),
        (OPTUNA_SHA, optuna_sha),
        ("(ref.) kubetune asha+tpe p=1", lambda seed, b: kubetune_asha(seed, b, parallel=1)),
    ]
    to_primary: dict[str, list[float]] = {}
    for label, run_mf in mf_methods:
        clock = time.perf_counter()
        runs = [run_mf(seed, budget) for seed in seeds]
        first = [r.resource_to(primary, budget) for r in runs]
        second = [r.resource_to(secondary, budget) for r in runs]
        to_primary[label] = [float(resource) for resource, _ in first]
        final = [r.final - HARTMANN6_OPT for r in runs]
        evals = statistics.fmean(len(r.trajectory) for r in runs)
        n_trials = statistics.fmean(r.trials for r in runs)
        print(
            f"{label:<30} {fmt(to_primary[label], 0):>15} "
            f"{statistics.median(to_primary[label]):>6.0f} "
            f"{sum(hit for _, hit in first):>2}/{len(seeds):<2} "
            f"{fmt([float(x) for x, _ in second], 0):>15} "
            f"{sum(hit for _, hit in second):>2}/{len(seeds):<2} "
            f"{fmt(final):>14} {evals:>10.1f} {n_trials:>6.1f} {time.perf_counter() - clock:>6.1f}"
        )
    print()
    hartmann = {label: by_problem["Hartmann-6"] for label, by_problem in regrets.items()}
    print(
        "ratios (± first-order standard error over seeds): "
        f"bayesian/random regret {ratio_with_error(hartmann[BAYESIAN], hartmann[RANDOM])}, "
        f"asha p=4/optuna resource {ratio_with_error(to_primary[ASHA_P4], to_primary[OPTUNA_SHA])}"
    )
    print(f"total wall time {time.perf_counter() - started:.1f} s")

    x = statistics.fmean(hartmann[BAYESIAN]) / statistics.fmean(hartmann[RANDOM])
    y = statistics.fmean(to_primary[ASHA_P4]) / statistics.fmean(to_primary[OPTUNA_SHA])
    print(
        f"RESULT hartmann6_regret_ratio_vs_random={x:.4f} "
        f"multifidelity_resource_ratio_vs_optuna_asha={y:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
