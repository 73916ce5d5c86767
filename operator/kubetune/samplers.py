"""Suggesting the next configuration: Optuna's samplers as a pure function of the history.

Each suggestion rebuilds an in-memory Optuna study from the experiment's trials and
asks it once, with a sampler seeded from (experiment seed, trial number). So a
suggestion depends on nothing but the spec and the history it is given: a restarted
operator that rebuilds the history asks the same question and gets the same answer,
which a long-lived sampler whose random state advanced in a dead process could not give.

What a sampler remembers between asks in Optuna's storage (CMA-ES keeps its optimizer in
trial system attributes, QMC a sample counter in the study's) is returned with the
suggestion, stored in the history, and written back when the study is rebuilt. The GP
sampler remembers one thing outside the storage: its fitted kernel parameters, the
starting point of the next fit, which kubetune carries in a study attribute too
(kubetune.gp_state). TPE's is its random generator: kubetune carries its position
(kubetune.tpe_stream), so `tpe` draws what a long-lived TPESampler draws.

`bayesian` and `tpe` draw their start-up trials at random; a long-lived Optuna sampler
draws them from one random stream, so kubetune replays that stream (the experiment's
seed, trial `number`'s draw) instead of seeding each start-up trial on its own. With
both, `bayesian` is where Optuna's own GPSampler is on the same seeds; before, its mean
regret on Hartmann-6 was several times Optuna's (bench/search_quality.py --ablation).
`bayesian` also searches its acquisition function twice as widely as GPSampler does by
default (`GP_PRELIMINARY_SAMPLES`), and with trials in parallel lets TPE make one suggestion
in four (`TPE_SHARE_IN_PARALLEL`): with both it is ahead of Optuna's GPSampler at p=4.
At p > 1 its random start-up also ends after `STARTUP_TRIALS - p` finished trials instead
of 10 (kubetune.startup: the GP's climb moves a step a round, and at p=4 it was short of
rounds): Hartmann-6, p=4, mean regret over seeds 0-19 0.072 -> 0.027, over 0-79 0.115 -> 0.070,
but neutral on the held-out seeds 80-319 (see kubetune.startup).

Trials that are still running are added as RUNNING, so parallel workers do not all get
the same suggestion: TPE's constant liar and the GP sampler's handling of running
trials spread them out. Trials stopped early by a scheduler are added as PRUNED with
their intermediate values, which TPE ranks by the step they reached.

Cost: Optuna's GP sampler grows cubically with the number of finished trials, so past
`algorithm.gpMaxTrials` (default 200) finished trials `bayesian` hands over to TPE.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import optuna
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.trial import TrialState

from kubetune.gp_state import (
    GP_KERNEL_ATTR,
    fitted_gp_kernel,
    restore_gp_kernel,
    widen_acquisition_search,
)
from kubetune.space import Params, distributions_for, iter_grid, params_key, suggest_params
from kubetune.spec import AlgorithmName, ExperimentSpec, Goal
from kubetune.startup import startup_point, startup_trials
from kubetune.tpe_stream import TPE_STREAM_ATTR, StreamPosition

optuna.logging.set_verbosity(optuna.logging.WARNING)
# QMC and GP samplers are marked experimental in Optuna; kubetune pins their behaviour
# with its own tests, so the warning on every ask is noise.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
logger = logging.getLogger(__name__)


class SamplerState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


_OPTUNA_STATE = {
    SamplerState.RUNNING: TrialState.RUNNING,
    SamplerState.COMPLETE: TrialState.COMPLETE,
    SamplerState.PRUNED: TrialState.PRUNED,
    SamplerState.FAILED: TrialState.FAIL,
}


@dataclass(frozen=True)
class SamplerTrial:
    """What a sampler sees of one trial."""

    number: int
    params: Params
    state: SamplerState
    value: float | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)
    system_attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suggestion:
    params: Params
    system_attrs: dict[str, Any]
    study_attrs: dict[str, Any]


def derived_seed(seed: int, number: int) -> int:
    """A per-trial seed: stable across processes (unlike hash()) and distinct per trial."""
    return random.Random(f"kubetune:{seed}:{number}").randrange(2**31)


TPE_SHARE_IN_PARALLEL = 4
"""With trials in parallel, `bayesian` has TPE make one suggestion in this many (trial
numbers 3, 7, 11, ...), the GP the others: a portfolio. At p=4 the GP's pending-point
treatment (qLogEI over fantasies of the running trials) puts a whole batch in the basin the
model believes in, and on Hartmann-6 a run settles in a local basin on a third of the
seeds; TPE draws from the density of the good trials, which spans several basins, and once
one of its points lands in a better basin the GP takes it up. Mean regret, Hartmann-6, 60
trials, p=4 sync: seeds 0-9 0.051 against 0.091 with the GP alone, seeds 10-19 0.092
against 0.159; Optuna's GPSampler 0.085 and 0.343 (bench/search_quality.py --ablation).
Held out (stop 41), seeds 80-319, which no choice of `bayesian`'s was measured on: 0.131 ±
0.019 against 0.230 ± 0.029 with the GP alone (paired -0.098 ± 0.022, better on 78 seeds,
worse on 45); Optuna's GPSampler 0.197 ± 0.025."""


def make_sampler(
    spec: ExperimentSpec,
    number: int,
    finished: int,
    sources: Sequence[optuna.trial.FrozenTrial] = (),
) -> BaseSampler:
    """`sources`: earlier experiments' trials for CMA-ES to start from (`warm_sources`)."""
    algorithm = spec.algorithm
    seed = derived_seed(algorithm.seed, number)
    startup: dict[str, Any] = (
        {}
        if algorithm.startupTrials is None and algorithm.name is not AlgorithmName.BAYESIAN
        else {"n_startup_trials": startup_trials(spec)}
    )
    name = algorithm.name
    if name is AlgorithmName.BAYESIAN and (
        handed_over_to_tpe(spec, finished)
        or (
            spec.budget.parallelTrials > 1
            and number % TPE_SHARE_IN_PARALLEL == TPE_SHARE_IN_PARALLEL - 1
        )
    ):
        name = AlgorithmName.TPE
    match name:
        case AlgorithmName.RANDOM | AlgorithmName.GRID:
            return RandomSampler(seed=seed)
        case AlgorithmName.SOBOL:
            # The scramble seed must stay the experiment's: the sequence is one sequence.
            return QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=algorithm.seed,
                independent_sampler=RandomSampler(seed=seed),
                warn_asynchronous_seeding=False,
                warn_independent_sampling=False,
            )
        case AlgorithmName.TPE:
            return TPESampler(
                seed=seed,
                constant_liar=True,
                multivariate=True,
                group=True,
                **startup,
            )
        case AlgorithmName.BAYESIAN:
            gp = GPSampler(seed=seed, warn_independent_sampling=False, **startup)
            widen_acquisition_search(gp)
            return gp
        case AlgorithmName.CMAES:
            return CmaEsSampler(
                seed=seed,
                independent_sampler=RandomSampler(seed=seed),
                warn_independent_sampling=False,
                source_trials=list(sources) or None,
                **startup,
            )
    raise AssertionError(f"unhandled algorithm {name}")


# ----- warm start (issue 17, kubetune.warmstart) ----------------------------------------
# Earlier experiments' trials reach the sampler as SamplerTrials numbered below 0 (the
# engine puts them before this experiment's own, always COMPLETE): the study holds them
# like any completed trial, so TPE and the GP model them and they count toward the
# start-up trials. CMA-ES ignores completed trials it did not sample itself; for it they
# are also Optuna's `source_trials` (Warm Starting CMA-ES: its initial mean and
# covariance come from the best tenth of them), which needs at least 10.
WARM_CMAES_MIN_SOURCES = 10


def is_prior(trial: SamplerTrial) -> bool:
    """A trial of an earlier experiment (spec.warmStart), not one of this experiment."""
    return trial.number < 0


def warm_sources(
    spec: ExperimentSpec, trials: Sequence[SamplerTrial]
) -> list[optuna.trial.FrozenTrial]:
    """CMA-ES's source trials: the earlier experiments' trials, when there are enough."""
    if spec.algorithm.name is not AlgorithmName.CMAES:
        return []
    priors = [t for t in trials if is_prior(t) and t.state is SamplerState.COMPLETE]
    if len(priors) < WARM_CMAES_MIN_SOURCES:
        return []
    return [_frozen(spec, t) for t in priors]


def _frozen(spec: ExperimentSpec, trial: SamplerTrial) -> optuna.trial.FrozenTrial:
    value = trial.value if trial.state is SamplerState.COMPLETE else None
    intermediate = {s: v for s, v in trial.intermediate.items() if math.isfinite(v)}
    return optuna.trial.create_trial(
        state=_OPTUNA_STATE[trial.state],
        value=value,
        params=dict(trial.params),
        distributions=distributions_for(spec.parameters, trial.params),
        intermediate_values=intermediate,
        system_attrs=dict(trial.system_attrs),
    )


def _in_startup(spec: ExperimentSpec, trials: Sequence[SamplerTrial]) -> bool:
    """Whether Optuna's GP or TPE sampler would draw this trial at random (start-up)."""
    algorithm = spec.algorithm
    counted = {SamplerState.COMPLETE}
    if algorithm.name is AlgorithmName.TPE:
        counted.add(SamplerState.PRUNED)  # TPESampler counts both
    elif algorithm.name is not AlgorithmName.BAYESIAN:
        return False
    return sum(t.state in counted for t in trials) < startup_trials(spec)


def _next_grid_point(spec: ExperimentSpec, trials: Sequence[SamplerTrial]) -> Params | None:
    used = {params_key(t.params) for t in trials}
    points = list(iter_grid(spec.parameters))
    # A seeded shuffle spreads the first trials over the grid instead of walking one corner.
    random.Random(spec.algorithm.seed).shuffle(points)
    return next((p for p in points if params_key(p) not in used), None)


def draws_from_tpe_stream(spec: ExperimentSpec, finished: int) -> bool:
    """Whether a TPE suggestion draws from the experiment's one TPE stream, as a long-lived
    TPESampler would (kubetune.tpe_stream): always for `tpe`, and for `bayesian` once it has
    handed over to TPE. The one suggestion in four TPE makes for `bayesian` at p > 1 is
    seeded per trial, as it was measured (TPE_SHARE_IN_PARALLEL)."""
    return spec.algorithm.name is AlgorithmName.TPE or handed_over_to_tpe(spec, finished)


def handed_over_to_tpe(spec: ExperimentSpec, finished: int) -> bool:
    """Whether `bayesian` has handed over to TPE: past `gpMaxTrials` finished trials."""
    algorithm = spec.algorithm
    return algorithm.name is AlgorithmName.BAYESIAN and finished > algorithm.gpMaxTrials


def reads_history(spec: ExperimentSpec) -> bool:
    """Whether the algorithm's suggestions depend on the trials before: random search's
    draws come from the trial's own seed alone, and building the study of every trial
    before it was most of its cost (at 10,000 trials, minutes a suggestion)."""
    return spec.algorithm.name is not AlgorithmName.RANDOM


def suggest(
    spec: ExperimentSpec,
    trials: Sequence[SamplerTrial],
    study_attrs: Mapping[str, Any],
    number: int,
) -> Suggestion | None:
    """The configuration for trial `number`, or None when a finite space is exhausted.

    Pure: the same spec, trials and study attributes give the same suggestion. Slow for
    the GP sampler (up to seconds), so shells call it off their event loop.
    """
    return suggest_many(spec, trials, study_attrs, [number])[0]


def suggest_many(
    spec: ExperimentSpec,
    trials: Sequence[SamplerTrial],
    study_attrs: Mapping[str, Any],
    numbers: Sequence[int],
) -> list[Suggestion | None]:
    """Suggestions for several new trials, in order, each seeing the ones before it as
    running: exactly what `suggest` would give called once per number, with each
    suggestion recorded before the next, but the study is built once.
    """
    finished = sum(t.state is SamplerState.COMPLETE for t in trials)
    direction: Literal["minimize", "maximize"] = (
        "minimize" if spec.objective.goal is Goal.MINIMIZE else "maximize"
    )
    # A storage of our own: its public API reads and writes system attributes.
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction=direction, sampler=RandomSampler())
    for trial in sorted(trials, key=lambda t: t.number) if reads_history(spec) else []:
        study.add_trial(_frozen(spec, trial))
    study_id = storage.get_study_id_from_name(study.study_name)
    for key, value in study_attrs.items():
        storage.set_study_system_attr(study_id, key, value)
    known = list(trials)
    suggestions: list[Suggestion | None] = []
    for number in numbers:
        if _in_startup(spec, known):
            params = startup_point(spec, number)
            study.add_trial(_frozen(spec, SamplerTrial(number, params, SamplerState.RUNNING)))
            attrs = dict(storage.get_study_system_attrs(study_id))
            suggestions.append(Suggestion(params=params, system_attrs={}, study_attrs=attrs))
            known.append(SamplerTrial(number, params, SamplerState.RUNNING))
            continue
        study.sampler = make_sampler(spec, number, finished, warm_sources(spec, trials))
        if spec.algorithm.name is AlgorithmName.GRID:
            point = _next_grid_point(spec, known)
            if point is None:
                suggestions += [None] * (len(numbers) - len(suggestions))
                break
            study.enqueue_trial(point)
        if isinstance(study.sampler, GPSampler):
            restore_gp_kernel(study.sampler, storage.get_study_system_attrs(study_id))
        stream = (
            StreamPosition(
                study.sampler, spec.algorithm.seed, storage.get_study_system_attrs(study_id)
            )
            if isinstance(study.sampler, TPESampler) and draws_from_tpe_stream(spec, finished)
            else None
        )
        asked = study.ask()
        params = suggest_params(asked, spec.parameters)
        if stream is not None:
            storage.set_study_system_attr(study_id, TPE_STREAM_ATTR, stream.after())
        if isinstance(study.sampler, GPSampler):
            kernel = fitted_gp_kernel(study.sampler)
            if kernel is not None:
                storage.set_study_system_attr(study_id, GP_KERNEL_ATTR, kernel)
        system_attrs = {
            k: v
            for k, v in storage.get_trial_system_attrs(
                storage.get_trial_id_from_study_id_trial_number(study_id, asked.number)
            ).items()
            if not k.startswith("fixed_params")  # enqueue bookkeeping, not sampler memory
        }
        suggestions.append(
            Suggestion(
                params=params,
                system_attrs=system_attrs,
                study_attrs=dict(storage.get_study_system_attrs(study_id)),
            )
        )
        known.append(SamplerTrial(number, params, SamplerState.RUNNING, system_attrs=system_attrs))
    return suggestions
