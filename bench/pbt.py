"""Population-based training: kubetune's PBT beside Ray Tune's, ASHA + TPE and the best
fixed hyperparameters, on the same problems, seeds, population, interval and resource.

Methods (same seeds 0..N-1, population 8, interval 4, 40 resource steps per member):
* kubetune PBT: the real engine on a virtual clock (`kubetune.simulate_pbt`), members
  holding their model state, checkpointing at every interval, exploits starting from the
  parent's checkpoint at the pinned step; initial population drawn by `random`.
* Ray Tune PBT: `PopulationBasedTraining` (asynchronous, its default) with the same
  population (num_samples), perturbation_interval, quantile_fraction,
  resample_probability and perturbation_factors, a function trainable that checkpoints
  at every interval (as Ray's docs ask), real Ray actors on this machine.
* kubetune ASHA + TPE: fixed hyperparameters per trial (no schedule), eta 3, 8 in
  parallel, cut at the same total resource as kubetune PBT used (`simulate`'s budget).
* Best fixed: the best hyperparameters of a dense grid, trained for 40 steps: the best
  any search without a schedule can do.

Problems (regret = final value's distance to the optimum; lower is better):
(a) the PBT paper's toy: Q(θ) = 1.2 - (θ0² + θ1²), θ from (0.9, 0.9) trained by gradient
    ascent (step 0.05) on Q̂(θ|h) = 1.2 - (h0·θ0² + h1·θ1²), h = (h0, h1) ∈ [0, 1]²;
    regret 1.2 - Q.
(b) a learning-rate schedule: x ← x·(1 - lr) per step from x = 1, loss x + lr, lr in
    [1e-4, 0.5] (log); a fixed rate cannot reach what a decaying one can (the best fixed
    leaves 0.113; the optimum, 1e-4, needs a large rate early and the smallest at the
    end); regret = loss - 1e-4.

The last line is `RESULT pbt_regret_ratio_vs_ray_pbt=<x> pbt_regret_ratio_vs_asha=<y>`,
x = kubetune PBT's mean regret / Ray Tune PBT's on (b), y = kubetune PBT / ASHA + TPE on
(b). Targets: x ≤ 1.0, y ≤ 0.5.

    nice -n 10 .venv/bin/python bench/pbt.py        # 10 seeds, Ray included (~10 min)
    .venv/bin/python bench/pbt.py --quick           # kubetune's side only, 3 seeds, seconds

`--quick` runs no Ray (it is large and slow to start, and not in the dev environment):
its RESULT line says `pbt_regret_ratio_vs_ray_pbt=nan`. Ray comes with
`pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.schedulers.pbt import generation
from kubetune.simulate import make_spec, simulate
from kubetune.simulate_pbt import make_pbt_spec, simulate_population

warnings.filterwarnings("ignore")

POPULATION = 8
INTERVAL = 4
STEPS = 40
QUANTILE = 0.25
RESAMPLE = 0.25
FACTORS = (0.8, 1.2)

# ----- the problems -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str
    title: str
    parameters: list[dict[str, Any]]
    metric: str
    goal: str
    init: Callable[[], Any]
    step: Callable[[Any, dict[str, Any]], Any]
    value: Callable[[Any, dict[str, Any]], float]
    regret: Callable[[float], float]
    grid: Callable[[], list[dict[str, Any]]]

    def fixed(self, params: dict[str, Any], steps: int) -> float:
        """The value after `steps` steps with fixed `params`."""
        state = self.init()
        for _ in range(steps):
            state = self.step(state, params)
        return self.value(state, params)


ETA = 0.05  # the toy's gradient step
LR_MIN, LR_MAX = 1e-4, 0.5


def _toy_step(theta: tuple[float, float], h: dict[str, Any]) -> tuple[float, float]:
    # Gradient ascent on Q̂: dQ̂/dθi = -2 hi θi.
    return (
        theta[0] + ETA * (-2 * h["h0"] * theta[0]),
        theta[1] + ETA * (-2 * h["h1"] * theta[1]),
    )


TOY = Problem(
    key="a",
    title="(a) PBT paper toy, Q = 1.2 - |θ|², maximise",
    parameters=[
        {"name": "h0", "type": "float", "min": 0.0, "max": 1.0},
        {"name": "h1", "type": "float", "min": 0.0, "max": 1.0},
    ],
    metric="q",
    goal="maximize",
    init=lambda: (0.9, 0.9),
    step=_toy_step,
    value=lambda theta, h: 1.2 - (theta[0] ** 2 + theta[1] ** 2),
    regret=lambda q: 1.2 - q,
    grid=lambda: [{"h0": i / 200, "h1": j / 200} for i in range(201) for j in range(201)],
)

SCHEDULE = Problem(
    key="b",
    title="(b) learning-rate schedule, x <- x(1 - lr), loss x + lr, minimise",
    parameters=[{"name": "lr", "type": "float", "min": LR_MIN, "max": LR_MAX, "scale": "log"}],
    metric="loss",
    goal="minimize",
    init=lambda: 1.0,
    step=lambda x, p: x * (1 - p["lr"]),
    value=lambda x, p: x + p["lr"],
    regret=lambda loss: loss - LR_MIN,
    grid=lambda: [
        {"lr": math.exp(math.log(LR_MIN) + k / 20000 * math.log(LR_MAX / LR_MIN))}
        for k in range(20001)
    ],
)

PROBLEMS = [TOY, SCHEDULE]


class _Model:
    """A problem as `simulate_pbt.Model`: the state is (model state, last params)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem

    def init(self, params: dict[str, Any], number: int) -> tuple[Any, dict[str, Any]]:
        return self.problem.init(), dict(params)

    def step(self, state: Any, params: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
        return self.problem.step(state[0], params), dict(params)

    def value(self, state: Any) -> float:
        return self.problem.value(state[0], state[1])


# ----- the methods --------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    value: float
    resource: int
    starts: int = 0  # attempts started (pods): kubetune PBT only
    # kubetune PBT only: pod starts of the members of each generation (0: the initial
    # population), and starts of members that were never replaced beyond their first.
    by_generation: dict[int, int] = field(default_factory=dict)
    winner_restarts: int = 0


def kubetune_pbt(problem: Problem, seed: int) -> Outcome:
    spec = make_pbt_spec(
        problem.parameters,
        population=POPULATION,
        interval=INTERVAL,
        max_resource=STEPS,
        seed=seed,
        metric=problem.metric,
        goal=problem.goal,
        quantile=QUANTILE,
        resampleProbability=RESAMPLE,
        perturbationFactors=list(FACTORS),
    )
    result = simulate_population(spec, _Model(problem))
    best = result.engine.best()
    assert best is not None
    trials = result.engine.trials
    by_generation: dict[int, int] = {}
    for trial in trials:
        gen = generation(trials, trial.number)
        by_generation[gen] = by_generation.get(gen, 0) + len(trial.attempts)
    winners = [t for t in trials if t.replaced_by is None]
    restarts = sum(len(t.attempts) - 1 for t in winners)
    return Outcome(best.value, result.resource, result.launches, by_generation, restarts)


def per_generation(outcomes: list[Outcome]) -> str:
    """Mean pod starts per generation over the runs, and the winners' restarts."""
    deepest = max(max(o.by_generation) for o in outcomes)
    means = [
        statistics.fmean(o.by_generation.get(g, 0) for o in outcomes) for g in range(deepest + 1)
    ]
    shown = " ".join(f"g{g}:{m:.1f}" for g, m in enumerate(means))
    restarts = sum(o.winner_restarts for o in outcomes)
    return f"pod starts per generation {shown}; winners restarted {restarts}"


def asha_tpe(problem: Problem, seed: int, budget: int) -> Outcome:
    spec = make_spec(
        problem.parameters,
        metric=problem.metric,
        goal=problem.goal,
        algorithm={"name": "tpe", "seed": seed},
        scheduler={
            "name": "asha",
            "resource": "step",
            "minResource": 1,
            "maxResource": STEPS,
            "reductionFactor": 3,
        },
        budget={"maxTrials": 1000, "parallelTrials": POPULATION},
    )
    # Closed form per step would do; training step by step keeps one definition.
    cache: dict[tuple, float] = {}

    def objective(params: dict[str, Any], step: int) -> float:
        key = (tuple(sorted(params.items())), step)
        if key not in cache:
            cache[key] = problem.fixed(dict(params), step)
        return cache[key]

    result = simulate(spec, objective, resource_budget=budget)
    value = result.best_value
    if value is None:  # nothing trained to the end within the budget
        value = min(
            (t.value for t in result.engine.trials if t.value is not None),
            key=lambda v: v if problem.goal == "minimize" else -v,
        )
    return Outcome(value, result.resource)


def best_fixed(problem: Problem) -> Outcome:
    values = [problem.fixed(p, STEPS) for p in problem.grid()]
    best = min(values) if problem.goal == "minimize" else max(values)
    return Outcome(best, STEPS)


def ray_pbt(problem: Problem, seed: int, storage: str) -> Outcome:
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    def trainable(config: dict[str, Any]) -> None:
        state, step = problem.init(), 0
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with (
                checkpoint.as_directory() as directory,
                open(os.path.join(directory, "state.json")) as handle,
            ):
                saved = json.load(handle)
            state, step = _thaw(saved["state"]), saved["step"]
        while step < STEPS:
            step += 1
            state = problem.step(state, config)
            metrics = {problem.metric: problem.value(state, config), "step": step}
            if step % INTERVAL == 0 or step == STEPS:
                with tempfile.TemporaryDirectory() as directory:
                    with open(os.path.join(directory, "state.json"), "w") as handle:
                        json.dump({"state": state, "step": step}, handle)
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
            else:
                tune.report(metrics)

    mutations: dict[str, Any] = {}
    space: dict[str, Any] = {}
    for parameter in problem.parameters:
        low, high = parameter["min"], parameter["max"]
        if parameter.get("scale") == "log":
            domain = tune.loguniform(low, high)
        else:
            domain = tune.uniform(low, high)
        mutations[parameter["name"]] = domain
        space[parameter["name"]] = domain
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=INTERVAL,
        hyperparam_mutations=mutations,
        quantile_fraction=QUANTILE,
        resample_probability=RESAMPLE,
        perturbation_factors=(FACTORS[1], FACTORS[0]),
        log_config=False,
    )
    random.seed(seed)  # Ray's PBT draws from the global generators
    import numpy as np

    np.random.seed(seed)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=problem.metric,
            mode="min" if problem.goal == "minimize" else "max",
            scheduler=scheduler,
            num_samples=POPULATION,
            reuse_actors=True,
            search_alg=tune.search.BasicVariantGenerator(random_state=seed),
        ),
        run_config=tune.RunConfig(
            name=f"pbt-{problem.key}-{seed}",
            storage_path=storage,
            verbose=0,
            stop={"step": STEPS},
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    results = tuner.fit()
    finals = [
        r.metrics[problem.metric] for r in results if r.metrics and r.metrics.get("step") == STEPS
    ]
    resource = sum(int(r.metrics.get("training_iteration", 0)) for r in results if r.metrics)
    best = min(finals) if problem.goal == "minimize" else max(finals)
    return Outcome(best, resource)


def _thaw(state: Any) -> Any:
    return tuple(state) if isinstance(state, list) else state


# ----- the run ------------------------------------------------------------------------


def summary(regrets: list[float]) -> str:
    mean = statistics.fmean(regrets)
    se = statistics.stdev(regrets) / math.sqrt(len(regrets)) if len(regrets) > 1 else 0.0
    return f"mean {mean:.4g} ± {se:.2g}  median {statistics.median(regrets):.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, no Ray: a smoke test")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--no-ray", action="store_true", help="leave Ray Tune out")
    parser.add_argument("--problems", default="ab", help="which problems (a, b)")
    args = parser.parse_args(argv)
    seeds = list(range(3 if args.quick else args.seeds))
    use_ray = not (args.quick or args.no_ray)
    storage = tempfile.mkdtemp(prefix="kubetune-bench-ray-")
    if use_ray:
        import ray

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # Tune's periodic snapshot of the whole experiment is for resuming a crashed run;
        # on two shared cores it costs more than the trials do.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "600")
        ray.init(num_cpus=POPULATION, include_dashboard=False, log_to_driver=False)
    print(
        f"population {POPULATION}, interval {INTERVAL}, {STEPS} steps per member, quantile "
        f"{QUANTILE}, resample {RESAMPLE}, factors {FACTORS}, seeds {seeds[0]}..{seeds[-1]}"
    )
    means: dict[tuple[str, str], float] = {}
    for problem in [p for p in PROBLEMS if p.key in args.problems]:
        started = time.monotonic()
        rows: dict[str, list[Outcome]] = {"kubetune PBT": [], "kubetune ASHA+TPE (fixed)": []}
        if use_ray:
            rows["Ray Tune PBT"] = []
        for seed in seeds:
            pbt = kubetune_pbt(problem, seed)
            rows["kubetune PBT"].append(pbt)
            rows["kubetune ASHA+TPE (fixed)"].append(asha_tpe(problem, seed, pbt.resource))
            if use_ray:
                rows["Ray Tune PBT"].append(ray_pbt(problem, seed, storage))
        rows["best fixed (dense grid)"] = [best_fixed(problem)] * len(seeds)
        print(f"\n{problem.title}  ({time.monotonic() - started:.0f} s)")
        for method, outcomes in rows.items():
            regrets = [problem.regret(o.value) for o in outcomes]
            means[(problem.key, method)] = statistics.fmean(regrets)
            resource = statistics.fmean(o.resource for o in outcomes)
            extra = ""
            if method == "kubetune PBT":
                starts = statistics.fmean(o.starts for o in outcomes)
                extra = f"  starts {starts:.1f} ({starts - POPULATION:.1f} replacements)"
            finals = statistics.median(o.value for o in outcomes)
            print(
                f"  {method:28s} regret {summary(regrets)}  (final {problem.metric} median "
                f"{finals:.4g})  resource {resource:.0f}{extra}"
            )
            if method == "kubetune PBT":
                print(f"  {'':28s} {per_generation(outcomes)}")
            sys.stdout.flush()
    ours = means[("b", "kubetune PBT")]
    ray_ratio = ours / means[("b", "Ray Tune PBT")] if use_ray else float("nan")
    asha_ratio = ours / means[("b", "kubetune ASHA+TPE (fixed)")]
    result = f"pbt_regret_ratio_vs_ray_pbt={ray_ratio:.3f} "
    result += f"pbt_regret_ratio_vs_asha={asha_ratio:.3f}"
    print(f"RESULT {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
