"""The random start-up of the model-based samplers: how many trials, and which points.

How many. Optuna's GPSampler and TPESampler draw at random until `n_startup_trials` (10)
trials have *finished*. With p trials in parallel, the p - 1 still running when the
tenth finishes were drawn at random too: at p = 4, 13 random trials of 60, and the GP's
first suggestion comes a round later. Rounds are what the GP is short of at p > 1: its
climb up a basin moves about one step per round (the other suggestions of a round go
where the fantasies of the running trials leave expected improvement), so at p = 4 on
Hartmann-6 a run often had not climbed the global basin, or had not found it, when its
60 trials ran out. So `bayesian` at p > 1 hands over to the GP after `STARTUP_TRIALS - p`
finished trials (at least `MIN_STARTUP_TRIALS`): in lock step, the GP makes trial 9's
suggestion at any p up to 8. An explicit `algorithm.startupTrials` is kept as given; one
at a time (p = 1) nothing changes.

Measured (bench/search_quality.py, Hartmann-6, 60 trials, p = 4, equal trial times, mean
regret ± se, median; before -> after, same seeds): seeds 0-19 0.072 ± 0.018 (0.008) ->
0.027 ± 0.013 (0.003); seeds 0-79 0.115 ± 0.032 (0.007) -> 0.070 ± 0.020 (0.004), per
block of 20 0.072/0.147/0.097/0.143 -> 0.027/0.050/0.095/0.108. Runs left in a local basin
(regret > 0.05): 27 of 80 -> 21 (10 runs rescued, 4 lost). Ending it after 10 - (p - 1)
finished trials (10 random trials at any p) did less: seeds 0-39 0.110 -> 0.100. Ending
it sooner, after 4 finished (7 random trials at p = 4), did worse: seeds 0-79 0.122 ± 0.032,
28 runs in a local basin.

Held out (stop 41): on seeds 80-319, which this choice was not made on, the gain does not
hold: 0.131 ± 0.019 against 0.123 ± 0.017 with Optuna's 10 (paired difference +0.009 ±
0.020, better on 64 seeds, worse on 58): neutral there, not the gain 0-79 showed. Kept,
as no worse over seeds 0-319 (0.116 against about 0.121, counting the 0.115 measured on
0-79 when the choice was made).

Which points: see `startup_point`.
"""

from __future__ import annotations

import optuna
from optuna.samplers import RandomSampler

from kubetune.space import Params, suggest_params
from kubetune.spec import AlgorithmName, ExperimentSpec

STARTUP_TRIALS = 10
"""Optuna's default `n_startup_trials` for GPSampler and TPESampler."""

MIN_STARTUP_TRIALS = 2
"""The fewest finished trials `bayesian` fits its GP to, however many run in parallel."""


def startup_trials(spec: ExperimentSpec) -> int:
    """Finished trials before `bayesian` or `tpe` stops drawing at random."""
    algorithm = spec.algorithm
    if algorithm.startupTrials is not None:
        return algorithm.startupTrials
    parallel = spec.budget.parallelTrials
    if algorithm.name is AlgorithmName.BAYESIAN and parallel > 1:
        return max(STARTUP_TRIALS - parallel, MIN_STARTUP_TRIALS)
    return STARTUP_TRIALS


def startup_point(spec: ExperimentSpec, number: int) -> Params:
    """Start-up trial `number`: the point one RandomSampler seeded with the experiment's seed
    draws at its (number + 1)-th ask, as a long-lived Optuna GPSampler or TPESampler does.

    Random points seeded per trial (`derived_seed`) are as random, but on Hartmann-6 they
    left kubetune's GP behind Optuna's on the same seeds for no reason but the draw
    (bench/search_quality.py); one stream per experiment makes the two comparable seed by
    seed. Replaying `number` asks of a random sampler costs microseconds each.
    """
    study = optuna.create_study(sampler=RandomSampler(seed=spec.algorithm.seed))
    params: Params = {}
    for _ in range(number + 1):
        params = suggest_params(study.ask(), spec.parameters)
    return params
