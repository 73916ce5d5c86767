"""`samplers.suggest`: deterministic per seed, conditional spaces, pending trials, grid,
the GP-to-TPE hand-over and CMA-ES's state carried through trial system attributes."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.samplers import GPSampler, RandomSampler, TPESampler

from kubetune.engine import SEARCH_SPACE_EXHAUSTED
from kubetune.samplers import (
    GP_KERNEL_ATTR,
    SamplerState,
    SamplerTrial,
    derived_seed,
    make_sampler,
    suggest,
)
from kubetune.space import distributions_for, suggest_params
from kubetune.spec import ExperimentSpec
from kubetune.startup import startup_trials
from tests.benchrun import load_bench

from .helpers import Driver, make_spec, real_sampler

ALGORITHMS = ["random", "grid", "sobol", "tpe", "bayesian", "cmaes"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Optuna's GP runs on torch, whose thread pool only fights for a small machine's cores
    (Optuna's GPSampler docs advise OMP_NUM_THREADS=1); restored afterwards."""
    try:
        import torch
    except ImportError:  # then `bayesian` cannot run at all, and its tests say so
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A conditional space every algorithm accepts (grid needs a step on floats):
#   opt           sgd | adam                      always
#   momentum      0, 0.3, 0.6, 0.9                opt = sgd
#   layers        1..3                            opt = adam
#   amsgrad       true | false                    opt = adam
#   eps           1..5                            amsgrad = true (so opt = adam too)
#   width         16, 32, 48, 64                  always
#   dropout       0, 0.25, 0.5                    always
CONDITIONAL = [
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.9, "step": 0.3,
     "when": {"opt": "sgd"}},
    {"name": "layers", "type": "int", "min": 1, "max": 3, "when": {"opt": "adam"}},
    {"name": "amsgrad", "type": "categorical", "values": [True, False], "when": {"opt": "adam"}},
    {"name": "eps", "type": "int", "min": 1, "max": 5, "when": {"amsgrad": True}},
    {"name": "width", "type": "int", "min": 16, "max": 64, "step": 16},
    {"name": "dropout", "type": "float", "min": 0.0, "max": 0.5, "step": 0.25},
]  # fmt: skip
LR = {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "scale": "log"}


def conditional_spec(algorithm: str, seed: int = 5) -> ExperimentSpec:
    parameters = CONDITIONAL if algorithm == "grid" else [*CONDITIONAL, LR]
    return make_spec(
        parameters=parameters,
        algorithm={"name": algorithm, "seed": seed, "startupTrials": 3},
        budget={"maxTrials": 100},
    )


def score(params: dict) -> float:
    """Some objective over the conditional space."""
    value = params["dropout"] + abs(params["width"] - 48) / 64
    value += params.get("momentum", 0.5) + params.get("layers", 0) / 10 + params.get("eps", 0) / 20
    return value + abs(math.log10(params.get("lr", 1e-2)) + 2)


def sequence(spec: ExperimentSpec, count: int) -> list[SamplerTrial]:
    """Suggest trials one after another, each completed with `score` before the next."""
    trials: list[SamplerTrial] = []
    study: dict = {}
    for number in range(count):
        suggestion = suggest(spec, trials, study, number)
        assert suggestion is not None
        study = suggestion.study_attrs
        trials.append(
            SamplerTrial(
                number,
                suggestion.params,
                SamplerState.COMPLETE,
                score(suggestion.params),
                system_attrs=suggestion.system_attrs,
            )
        )
    return trials


def sequences_by_algorithm(seed: int, count: int = 7) -> dict[str, list[dict]]:
    return {
        algorithm: [t.params for t in sequence(conditional_spec(algorithm, seed), count)]
        for algorithm in ALGORITHMS
    }


# ----- determinism ----------------------------------------------------------------------


def test_each_algorithm_is_deterministic_per_seed_across_processes() -> None:
    # A fresh interpreter: no sampler, RNG or cache state of this process carries over.
    # It runs while this process computes the same sequences.
    code = (
        "import json; from tests.engine.test_samplers import sequences_by_algorithm; "
        "print(json.dumps(sequences_by_algorithm(seed=5)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    fresh = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        here = sequences_by_algorithm(seed=5)
        assert sequences_by_algorithm(seed=5) == here  # asked again in the same process
        # Another seed, another search (the first four trials are enough to tell).
        other = sequences_by_algorithm(seed=6, count=4)
        for algorithm in ALGORITHMS:
            assert other[algorithm] != here[algorithm][:4], algorithm
        out, err = fresh.communicate(timeout=120)
    finally:
        fresh.kill()
    assert fresh.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(here))


def test_random_search_draws_what_optunas_sampler_draws_on_the_whole_study() -> None:
    """Random search skips building the study from the history (at 10,000 trials that
    was minutes per suggestion) and draws exactly what Optuna's RandomSampler, seeded as
    kubetune seeds it, draws on a study that holds every earlier trial."""
    spec = conditional_spec("random", seed=9)
    trials = sequence(spec, 8)
    study = optuna.create_study(direction="minimize")
    for trial in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=distributions_for(spec.parameters, trial.params),
                value=trial.value,
            )
        )
    for trial in trials:
        study.sampler = RandomSampler(seed=derived_seed(9, trial.number))
        expected = suggest_params(study.ask(), spec.parameters)
        assert trial.params == expected, trial.number


# ----- conditional parameters -----------------------------------------------------------


def expected_active(params: dict, algorithm: str) -> set[str]:
    active = {"opt", "width", "dropout"} | (set() if algorithm == "grid" else {"lr"})
    if params["opt"] == "sgd":
        active.add("momentum")
    else:
        active |= {"layers", "amsgrad"}
        if params["amsgrad"] is True:
            active.add("eps")
    return active


def on_step(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-9


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conditional_parameters_with_every_sampler(algorithm: str) -> None:
    trials = sequence(conditional_spec(algorithm), 12)
    branches = set()
    for trial in trials:
        params = trial.params
        assert set(params) == expected_active(params, algorithm), params
        branches.add((params["opt"], params.get("amsgrad")))
        assert params["opt"] in ("sgd", "adam")
        assert type(params["width"]) is int and params["width"] in (16, 32, 48, 64)
        assert 0.0 <= params["dropout"] <= 0.5 and on_step(params["dropout"], 0.0, 0.25)
        if "momentum" in params:
            assert 0.0 <= params["momentum"] <= 0.9 and on_step(params["momentum"], 0.0, 0.3)
        if "layers" in params:
            assert type(params["layers"]) is int and 1 <= params["layers"] <= 3
        if "amsgrad" in params:
            assert params["amsgrad"] in (True, False)
        if "eps" in params:
            assert type(params["eps"]) is int and 1 <= params["eps"] <= 5
        if "lr" in params:
            assert 1e-4 <= params["lr"] <= 1e-1
    # The sequence visited both branches of opt, so both sides were checked.
    assert {opt for opt, _ in branches} == {"sgd", "adam"}


# ----- pending trials -------------------------------------------------------------------

SMALL = [
    {"name": "x", "type": "float", "min": 0.0, "max": 10.0},
    {"name": "z", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "kind", "type": "categorical", "values": ["a", "b"]},
]


def history(count: int) -> list[SamplerTrial]:
    trials = []
    for number in range(count):
        params = {
            "x": (number * 3.7) % 10,
            "z": (number * 0.37) % 1,
            "kind": "ab"[number % 2],
        }
        value = (params["x"] - 3) ** 2 + (params["z"] - 0.2) ** 2 + (params["kind"] == "b")
        trials.append(SamplerTrial(number, params, SamplerState.COMPLETE, value))
    return trials


@pytest.mark.parametrize("algorithm", ["tpe", "bayesian"])
def test_pending_trials_push_the_next_suggestion_elsewhere(algorithm: str) -> None:
    spec = make_spec(parameters=SMALL, algorithm={"name": algorithm, "seed": 2, "startupTrials": 4})
    done = history(10)
    number = 14
    # Where the sampler goes for trial 14 when it does not know of any pending trial...
    alone = suggest(spec, done, {}, number)
    assert alone is not None
    # ...is taken by four pending trials (the same seed is used: only they differ).
    pending = [SamplerTrial(10 + i, alone.params, SamplerState.RUNNING) for i in range(4)]
    crowded = suggest(spec, [*done, *pending], {}, number)
    assert crowded is not None
    assert crowded.params != alone.params

    # As a parallel shell would: four suggestions in a row, each pending when the next is
    # asked; the fifth differs from all four.
    trials = list(done)
    for n in range(10, 15):
        suggestion = suggest(spec, trials, {}, n)
        assert suggestion is not None
        assert all(suggestion.params != t.params for t in trials[10:]), n
        trials.append(SamplerTrial(n, suggestion.params, SamplerState.RUNNING))


# ----- grid -----------------------------------------------------------------------------

GRID = [
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.5, "step": 0.25,
     "when": {"opt": "sgd"}},
    {"name": "width", "type": "int", "min": 1, "max": 2},
]  # fmt: skip


def grid_points() -> list[dict]:
    """By hand: sgd x momentum {0, .25, .5} x width {1, 2}, and adam x width {1, 2}."""
    points = [
        {"opt": "sgd", "momentum": m, "width": w}
        for m, w in itertools.product([0.0, 0.25, 0.5], [1, 2])
    ]
    return points + [{"opt": "adam", "width": w} for w in (1, 2)]


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def test_grid_enumerates_each_point_once_then_ends_the_experiment() -> None:
    spec = make_spec(
        parameters=GRID,
        algorithm={"name": "grid", "seed": 3},
        budget={"maxTrials": 50, "parallelTrials": 3},
    )
    driver = Driver(spec, sample=real_sampler)
    for _ in range(100):
        driver.decide()
        if driver.finished is not None:
            break
        for trial in driver.engine.running():
            driver.report(trial.number, 1, float(trial.number))
            assert driver.exit(trial.number)
    assert driver.finished is not None
    assert (driver.finished.succeeded, driver.finished.reason) == (True, SEARCH_SPACE_EXHAUSTED)
    seen = [key(t.params) for t in driver.engine.trials]
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) == {key(p) for p in grid_points()}
    # Asked once more with the whole grid in the history: nothing left.
    trials = [
        SamplerTrial(t.number, t.params, SamplerState.COMPLETE, 1.0) for t in driver.engine.trials
    ]
    assert suggest(spec, trials, {}, len(trials)) is None


def test_grid_order_depends_on_the_seed_but_covers_the_same_points() -> None:
    orders = []
    for seed in (0, 1):
        spec = make_spec(parameters=GRID, algorithm={"name": "grid", "seed": seed})
        trials: list[SamplerTrial] = []
        while (suggestion := suggest(spec, trials, {}, len(trials))) is not None:
            trials.append(SamplerTrial(len(trials), suggestion.params, SamplerState.RUNNING))
        orders.append([key(t.params) for t in trials])
    assert orders[0] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(key(p) for p in grid_points())


# ----- bayesian hands over to TPE -------------------------------------------------------


def finished_history(count: int) -> list[SamplerTrial]:
    trials = []
    for number in range(count):
        params = {"x": (number * 0.618) % 1, "y": (number * 0.382) % 1}
        value = (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2
        trials.append(SamplerTrial(number, params, SamplerState.COMPLETE, value))
    return trials


XY = [
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "y", "type": "float", "min": 0.0, "max": 1.0},
]


def test_bayesian_hands_over_to_tpe_past_gp_max_trials() -> None:
    spec = make_spec(parameters=XY, algorithm={"name": "bayesian", "seed": 1, "gpMaxTrials": 10})
    assert isinstance(make_sampler(spec, 50, finished=10), GPSampler)
    assert isinstance(make_sampler(spec, 50, finished=11), TPESampler)
    default = make_spec(parameters=XY, algorithm={"name": "bayesian", "seed": 1})
    assert isinstance(make_sampler(default, 300, finished=200), GPSampler)
    assert isinstance(make_sampler(default, 300, finished=201), TPESampler)
    # Failed, pruned and running trials are not "finished" for the GP's cost.
    others = [
        SamplerTrial(n, {"x": 0.5, "y": 0.5}, state)
        for n, state in enumerate([SamplerState.FAILED, SamplerState.RUNNING] * 10)
    ]
    assert suggest(spec, others, {}, 20) is not None


def test_bayesian_in_parallel_lets_tpe_make_one_suggestion_in_four() -> None:
    """At p=4 the GP alone settled in one of Hartmann-6's local basins on a third of the
    seeds (mean regret 0.125 over seeds 0-19); with TPE making one suggestion in four,
    0.072 (bench/search_quality.py --ablation). One at a time, the GP makes them all."""
    parallel = make_spec(
        parameters=XY,
        algorithm={"name": "bayesian", "seed": 1},
        budget={"maxTrials": 50, "parallelTrials": 4},
    )
    kinds = [type(make_sampler(parallel, n, finished=20)) for n in range(20, 28)]
    assert kinds == [GPSampler, GPSampler, GPSampler, TPESampler] * 2
    serial = make_spec(parameters=XY, algorithm={"name": "bayesian", "seed": 1})
    assert {type(make_sampler(serial, n, finished=20)) for n in range(20, 28)} == {GPSampler}


def test_bayesian_past_gp_max_trials_is_much_faster_than_the_gp() -> None:
    done = finished_history(250)
    bayesian = make_spec(parameters=XY, algorithm={"name": "bayesian", "seed": 1})
    gp_only = make_spec(
        parameters=XY, algorithm={"name": "bayesian", "seed": 1, "gpMaxTrials": 2000}
    )
    tpe = make_spec(parameters=XY, algorithm={"name": "tpe", "seed": 1})
    suggest(gp_only, done[:12], {}, 12)  # warm up: torch and the GP code are imported

    def timed(spec: ExperimentSpec) -> tuple[float, dict]:
        start = time.perf_counter()
        suggestion = suggest(spec, done, {}, 250)
        assert suggestion is not None
        return time.perf_counter() - start, suggestion.params

    gp_seconds, _ = timed(gp_only)
    handed_over = [timed(bayesian) for _ in range(3)]
    fastest = min(seconds for seconds, _ in handed_over)
    assert fastest * 4 < gp_seconds, (fastest, gp_seconds)
    # It is TPE exactly as `algorithm: tpe` would run it, for the same seed and history.
    assert handed_over[0][1] == timed(tpe)[1]


# ----- CMA-ES state ---------------------------------------------------------------------

SPHERE = [
    {"name": "x", "type": "float", "min": -5.0, "max": 5.0},
    {"name": "y", "type": "float", "min": -5.0, "max": 5.0},
]


def sphere(params: dict) -> float:
    return (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2


def cma_run(count: int, feed_back: bool) -> tuple[list[dict], list[float]]:
    """Returns each suggestion's system attributes and its objective value."""
    spec = make_spec(parameters=SPHERE, algorithm={"name": "cmaes", "seed": 4})
    trials: list[SamplerTrial] = []
    attrs, values = [], []
    for number in range(count):
        suggestion = suggest(spec, trials, {}, number)
        assert suggestion is not None
        # What the engine stores goes through the history's JSON form.
        stored = json.loads(json.dumps(suggestion.system_attrs))
        attrs.append(stored)
        values.append(sphere(suggestion.params))
        trials.append(
            SamplerTrial(
                number,
                suggestion.params,
                SamplerState.COMPLETE,
                values[-1],
                system_attrs=stored if feed_back else {},
            )
        )
    return attrs, values


def test_cmaes_carries_its_state_through_trial_system_attrs() -> None:
    # 2 dimensions: population 4 + ⌊3 ln 2⌋ = 6; one random start-up trial.
    attrs, values = cma_run(40, feed_back=True)
    generations = [a.get("cma:generation") for a in attrs]
    assert generations[0] is None  # the start-up trial is sampled independently
    assert generations[1:] == sorted(generations[1:])  # never goes back
    assert generations[-1] >= 4
    # Whenever a generation is complete, the next trial carries the updated optimizer.
    for number in range(2, 40):
        if generations[number] != generations[number - 1]:
            assert any(k.startswith("cma:optimizer") for k in attrs[number]), number
    # And the search progresses: later generations are better on average.
    by_generation: dict[int, list[float]] = {}
    for generation, value in zip(generations[1:], values[1:], strict=True):
        by_generation.setdefault(generation, []).append(value)
    first, last = by_generation[0], by_generation[generations[-2]]
    assert sum(last) / len(last) < sum(first) / len(first) / 2

    # Without its attributes fed back, CMA-ES never gets past its first generation.
    forgetful, _ = cma_run(20, feed_back=False)
    assert {a.get("cma:generation") for a in forgetful[1:]} == {0}


# ----- search quality: what a long-lived Optuna sampler has, kubetune has too -------------

HARTMANN_SPACE = [{"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(6)]


def optuna_startup_points(algorithm: str, seed: int, count: int, parallel: int) -> list[dict]:
    """The first `count` points Optuna's own sampler draws, p trials running at a time."""
    import optuna

    sampler = (
        GPSampler(seed=seed)
        if algorithm == "bayesian"
        else TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True)
    )
    study = optuna.create_study(sampler=sampler)
    running: list = []
    points = []
    for _ in range(count):
        if len(running) == parallel:
            study.tell(running.pop(0), 0.0)
        trial = study.ask()
        points.append({p["name"]: trial.suggest_float(p["name"], 0.0, 1.0) for p in HARTMANN_SPACE})
        running.append(trial)
    return points


@pytest.mark.parametrize("algorithm", ["bayesian", "tpe"])
@pytest.mark.parametrize("parallel", [1, 4])
def test_startup_trials_are_the_points_optuna_draws_for_the_seed(
    algorithm: str, parallel: int
) -> None:
    """Start-up points come from one random stream per experiment, as in a long-lived
    Optuna sampler: per-trial seeds left kubetune's GP behind Optuna's on the same seeds
    (Hartmann-6, 10 seeds, p=1: mean regret 0.20 against 0.013)."""
    spec = make_spec(
        parameters=HARTMANN_SPACE,
        algorithm={"name": algorithm, "seed": 3},
        budget={"maxTrials": 100, "parallelTrials": parallel},
    )
    # At p > 1 `bayesian` ends its start-up sooner (test_bayesian_in_parallel_starts_its_gp_sooner).
    count = min(10, startup_trials(spec) + parallel - 1)
    expected = optuna_startup_points(algorithm, 3, count, parallel)
    trials: list[SamplerTrial] = []
    for number in range(count):
        if number >= parallel:  # the oldest running trial has finished
            done = trials[number - parallel]
            trials[number - parallel] = SamplerTrial(
                done.number, done.params, SamplerState.COMPLETE, 0.0
            )
        suggestion = suggest(spec, trials, {}, number)
        assert suggestion is not None
        assert suggestion.params == pytest.approx(expected[number]), number
        trials.append(SamplerTrial(number, suggestion.params, SamplerState.RUNNING))


def test_bayesian_in_parallel_starts_its_gp_sooner() -> None:
    """Optuna's GP draws at random until 10 trials have finished, so at p=4 in lock step 13 of
    60 trials were random and the GP, whose climb moves a step a round, ran out of rounds:
    Hartmann-6, 60 trials, p=4, mean regret over seeds 0-19 0.072 (a local basin on 9 seeds);
    with the start-up ended after 10 - p finished trials, 0.027 (3 seeds; seeds 0-79: 0.115
    -> 0.070; neutral on the held-out seeds 80-319, kubetune.startup). Trials 0-8 are the
    experiment's random stream, trial 9 the GP's, at p=4 and 2."""
    for parallel in (2, 4):
        spec = make_spec(
            parameters=HARTMANN_SPACE,
            algorithm={"name": "bayesian", "seed": 3},
            budget={"maxTrials": 60, "parallelTrials": parallel},
        )
        assert startup_trials(spec) == 10 - parallel
        stream = optuna_startup_points("bayesian", 3, 10, 1)
        trials: list[SamplerTrial] = []
        for number in range(10):  # in lock step: the oldest running trial finishes first
            if number >= parallel:
                done = trials[number - parallel]
                value = sum((v - 0.3) ** 2 for v in done.params.values())
                trials[number - parallel] = SamplerTrial(
                    done.number, done.params, SamplerState.COMPLETE, value
                )
            suggestion = suggest(spec, trials, {}, number)
            assert suggestion is not None
            assert (suggestion.params == pytest.approx(stream[number])) is (number < 9), number
            trials.append(SamplerTrial(number, suggestion.params, SamplerState.RUNNING))
        assert GP_KERNEL_ATTR in suggestion.study_attrs  # the GP made trial 9's
    # One at a time, with an explicit count, and for TPE: as before.
    serial = make_spec(parameters=HARTMANN_SPACE, algorithm={"name": "bayesian", "seed": 3})
    assert startup_trials(serial) == 10
    explicit = make_spec(
        parameters=HARTMANN_SPACE,
        algorithm={"name": "bayesian", "seed": 3, "startupTrials": 10},
        budget={"maxTrials": 60, "parallelTrials": 4},
    )
    assert startup_trials(explicit) == 10
    tpe = make_spec(
        parameters=HARTMANN_SPACE,
        algorithm={"name": "tpe"},
        budget={"maxTrials": 60, "parallelTrials": 4},
    )
    assert startup_trials(tpe) == 10
    wide = make_spec(
        parameters=HARTMANN_SPACE,
        algorithm={"name": "bayesian"},
        budget={"maxTrials": 99, "parallelTrials": 64},
    )
    assert startup_trials(wide) == 2


def test_bayesian_carries_its_fitted_kernel_through_the_study_attrs() -> None:
    """A new GPSampler per suggestion would fit its kernel from default values every time;
    Optuna's long-lived sampler starts each fit from the last one. kubetune stores the
    fitted kernel with the suggestion, and the next suggestion starts from it."""
    from kubetune.samplers import GP_KERNEL_ATTR

    spec = make_spec(
        parameters=HARTMANN_SPACE, algorithm={"name": "bayesian", "seed": 2, "startupTrials": 4}
    )
    trials: list[SamplerTrial] = []
    attrs: dict = {}
    kernels = []
    for number in range(7):
        suggestion = suggest(spec, trials, attrs, number)
        assert suggestion is not None
        attrs = json.loads(json.dumps(suggestion.study_attrs))  # as the history stores it
        kernels.append(attrs.get(GP_KERNEL_ATTR))
        value = sum((v - 0.3) ** 2 for v in suggestion.params.values())
        trials.append(SamplerTrial(number, suggestion.params, SamplerState.COMPLETE, value))
    assert kernels[:4] == [None] * 4  # start-up: no GP yet
    for kernel in kernels[4:]:
        assert kernel is not None and len(kernel) == 6 + 2
        assert all(math.isfinite(v) and v >= 0 for v in kernel)
    # Pure: the same history and attributes give the same suggestion and kernel.
    again = suggest(spec, trials[:6], {**attrs, GP_KERNEL_ATTR: kernels[5]}, 6)
    first = suggest(spec, trials[:6], {**attrs, GP_KERNEL_ATTR: kernels[5]}, 6)
    assert again == first


def test_bayesian_searches_its_acquisition_twice_as_widely_as_optuna(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Optuna's GPSampler scores 2048 QMC points and starts 10 local searches per ask; with
    those, kubetune's `bayesian` got stuck in a local basin of Hartmann-6 at p=4 as often as
    Optuna (mean regret over seeds 0-19: 0.243, Optuna 0.214); twice as wide, 0.125. The
    widths are private attributes in Optuna, so this watches what reaches its optimizer."""
    from optuna.samplers._gp import sampler as gp_sampler

    # The sampler reaches the optimizer through a lazy-import wrapper that copies the
    # module's names when first used, so the spy goes on the name the sampler looks up.
    optim_mixed = gp_sampler.optim_mixed
    seen: list[tuple[int, int]] = []
    optimize = optim_mixed.optimize_acqf_mixed

    def watched(*args, **kwargs):
        seen.append((kwargs["n_preliminary_samples"], kwargs["n_local_search"]))
        return optimize(*args, **kwargs)

    monkeypatch.setattr(optim_mixed, "optimize_acqf_mixed", watched)
    spec = make_spec(
        parameters=HARTMANN_SPACE, algorithm={"name": "bayesian", "seed": 1, "startupTrials": 3}
    )
    trials = [
        SamplerTrial(n, {f"x{i}": (n + i) % 5 / 4 for i in range(6)}, SamplerState.COMPLETE, n)
        for n in range(3)
    ]
    trials.append(SamplerTrial(3, {f"x{i}": 0.5 for i in range(6)}, SamplerState.RUNNING))
    assert suggest(spec, trials, {}, 4) is not None
    defaults = GPSampler()
    assert seen == [(2 * defaults._n_preliminary_samples, 2 * defaults._n_local_search)]


@pytest.mark.slow
def test_bayesian_regret_stays_near_optunas_own_gp_on_the_same_seeds() -> None:
    """The mean regret of small fixed-seed runs, bounded by Optuna's own GPSampler's on the
    same seeds in this test. Before issue 12's fix (a GPSampler per ask fitted its kernel
    from defaults, start-up points seeded per trial) seeds 0 and 7 gave 0.51 and 1.66 after
    40 trials against Optuna's 0.003 and 0.002 (about 0.6 against 0.08 over four seeds):
    the sampler fitted a poor model and kept suggesting points on the box's faces.

    Ten seeds, not two: a GP run is chaotic, and a new torch moves single seeds a long way
    (torch 2.15: seed 0 went from 0.04 to 0.25, Optuna's own run staying at 0.003). Over
    seeds 0-9 then: 0.134 against Optuna's 0.077. The margin, 0.25, is half the old code's
    gap and about three standard errors above today's. About 100 s."""
    bench = load_bench("search_quality.py")
    h6 = bench.PROBLEMS["H6"]
    seeds, trials = range(10), 40
    ours = [bench.kubetune_run(h6, "bayesian", s, trials, 1, True) for s in seeds]
    optunas = [bench.optuna_run(h6, "bayesian", s, trials, 1, True) for s in seeds]
    mean_ours, mean_optuna = sum(ours) / len(ours), sum(optunas) / len(optunas)
    assert mean_ours <= mean_optuna + 0.25, (ours, optunas)
