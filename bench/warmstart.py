"""Warm start (spec.warmStart, mode transfer) on Hartmann-6: does an earlier search help?

Per seed s (the same seeds for every row), all at p=4 sync on the simulated clock, the
real engine and samplers (kubetune.simulate, as bench/search_quality.py runs them):

* parent: a 30-trial run (seed s + 1000: an earlier search, not the cold run again);
* child: a 30-trial run with `warmStart: {experiments: [parent], mode: transfer}`: its
  WarmStarted record (kubetune.warmstart.warm_start over the parent's completed trials)
  is recorded in the engine before its first decision, as the local runner and the
  operator record it; its regret counts its own 30 trials only (transfer keeps the
  parent's trials out of its best);
* cold 30 and cold 60: runs of 30 and 60 trials without warm start.

Regret = true value of the best trial found - optimum (-3.32237). The last line is
`RESULT warmstart_regret_ratio_vs_cold=<child mean regret / cold-30 mean regret>`
(algorithm `bayesian`, the GP); lower is better, the target is at most 0.5.

    nice -n 10 .venv/bin/python bench/warmstart.py            # 10 seeds, ~20 min
    .venv/bin/python bench/warmstart.py --quick               # smoke test, < 1 minute
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from unittest import mock

import search_quality as sq  # bench/search_quality.py: its problems, specs and summaries

from kubetune import simulate as simulation
from kubetune.engine import Engine
from kubetune.events import WarmStarted
from kubetune.spec import ExperimentSpec
from kubetune.warmstart import ParentExperiment, completed_trials, warm_start

PARENT_SEED_OFFSET = 1000
PARALLEL = 4


def run(
    algorithm: str, seed: int, trials: int, warm: WarmStarted | None = None
) -> tuple[float, Engine]:
    """One run of Hartmann-6 at p=4 sync; its regret over its own trials, and its engine."""
    problem = sq.PROBLEMS["H6"]
    spec = sq.spec_for(problem, algorithm, seed, trials, PARALLEL)
    if warm is not None:
        spec = with_warm_start(spec, warm)
    observe = sq.observe_fn(problem, seed)

    def engine(spec: ExperimentSpec, experiment: str) -> Engine:
        made = Engine(spec, experiment)
        if warm is not None:
            made.record_warm_start(warm)  # before the first decision, as the shells do
        return made

    # kubetune.simulate makes its own Engine: this one starts with the warm-start record.
    with mock.patch.object(simulation, "Engine", engine):
        result = simulation.simulate(
            spec, lambda p, step: observe(p), step_duration=1.0, max_steps=1
        )
    done = [(t.params, t.value) for t in result.engine.trials if t.value is not None]
    assert len(done) == trials, (len(done), trials)
    return sq.regret(problem, done), result.engine


def with_warm_start(spec: ExperimentSpec, warm: WarmStarted) -> ExperimentSpec:
    data = spec.model_dump(mode="json")
    data["warmStart"] = {"experiments": warm.parents, "mode": warm.warm_mode}
    return ExperimentSpec.model_validate(data)


def child_after_parent(
    algorithm: str, seed: int, parent_trials: int, child_trials: int
) -> tuple[float, float, WarmStarted]:
    """(parent regret, child regret, the child's warm-start record)."""
    parent_regret, parent = run(algorithm, seed + PARENT_SEED_OFFSET, parent_trials)
    earlier = ParentExperiment(
        "parent", parent.spec.objective, completed_trials("parent", parent.trials)
    )
    spec = sq.spec_for(sq.PROBLEMS["H6"], algorithm, seed, child_trials, PARALLEL)
    warm = warm_start(
        with_warm_start(spec, WarmStarted("transfer", ["parent"], 0.0)), [earlier], now=0.0
    )
    child_regret, _ = run(algorithm, seed, child_trials, warm)
    return parent_regret, child_regret, warm


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 10)")
    parser.add_argument("--quick", action="store_true", help="a small smoke-test run")
    parser.add_argument("--trials", type=int, default=None, help="parent and child trials (30)")
    parser.add_argument(
        "--algorithms", default="bayesian,tpe", help="comma-separated; bayesian is the RESULT"
    )
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (1 if args.quick else 10)))
    trials = args.trials or (12 if args.quick else 30)
    algorithms = ["bayesian"] if args.quick else args.algorithms.split(",")
    if "bayesian" not in algorithms:
        parser.error("--algorithms: bayesian is needed for the RESULT line")
    started = time.perf_counter()
    print(
        f"# warm start on Hartmann-6, p={PARALLEL} sync, seeds 0..{len(seeds) - 1}: regret "
        f"(mean ± se, median); parent seeds are s + {PARENT_SEED_OFFSET}"
    )
    header = f"{'algorithm':<9} {'run':<34} {'mean ± se':>15} {'median':>7} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, str], list[float]] = {}
    for algorithm in algorithms:
        rows: list[tuple[str, list[float]]] = []
        clock = time.perf_counter()
        parents, children, loaded = [], [], []
        for seed in seeds:
            parent, child, warm = child_after_parent(algorithm, seed, trials, trials)
            parents.append(parent)
            children.append(child)
            loaded.append(len(warm.prior_trials))
        rows.append((f"parent, {trials} trials", parents))
        rows.append((f"child, {trials} trials, transfer", children))
        child_wall = time.perf_counter() - clock
        for count in (trials, 2 * trials):
            clock = time.perf_counter()
            values = [run(algorithm, seed, count)[0] for seed in seeds]
            rows.append((f"cold, {count} trials", values))
            results[(algorithm, f"cold {count}")] = values
        results[(algorithm, "child")] = children
        for index, (label, values) in enumerate(rows):
            wall = f"{child_wall:7.1f}" if index == 1 else ""
            print(f"{algorithm:<9} {label:<34} {sq.summary(values)} {wall:>7}", flush=True)
        print(f"{'':<9} child per seed: " + " ".join(f"{v:.3f}" for v in children))
        print(f"{'':<9} warm-start trials loaded per child: {sorted(set(loaded))}")
        cold = results[(algorithm, f"cold {trials}")]
        print(
            f"{'':<9} child / cold {trials}: {sq.ratio(children, cold):.3f}; "
            f"child / cold {2 * trials}: "
            f"{sq.ratio(children, results[(algorithm, f'cold {2 * trials}')]):.3f}"
        )
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")
    ratio = sq.ratio(results[("bayesian", "child")], results[("bayesian", f"cold {trials}")])
    mean = statistics.fmean(results[("bayesian", "child")])
    print(f"(bayesian child mean regret {mean:.4f})")
    print(f"RESULT warmstart_regret_ratio_vs_cold={ratio:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
