"""kubetune's `tpe` draws what a long-lived Optuna TPESampler draws for the same seed: its
generator's position is carried in the history (kubetune.tpe_stream)."""

from __future__ import annotations

import json
import random

import numpy as np
import optuna
import pytest
from optuna.samplers import TPESampler

from kubetune.samplers import SamplerState, SamplerTrial, suggest, suggest_many
from kubetune.space import suggest_params
from kubetune.spec import ExperimentSpec
from kubetune.startup import startup_trials
from kubetune.tpe_stream import TPE_STREAM_ATTR, generator_at

from .helpers import make_spec
from .test_samplers import CONDITIONAL, LR, score

UNIT_BOX_4D = [{"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(4)]


def bowl(params: dict) -> float:
    return sum((params[f"x{i}"] - 0.2 * i) ** 2 for i in range(4))


def optuna_long_lived(spec: ExperimentSpec, objective, count: int, parallel: int) -> list[dict]:
    """Optuna's own TPESampler, one object for the whole run, p trials running at a time
    (the oldest ends first), with kubetune's options."""
    sampler = TPESampler(
        seed=spec.algorithm.seed,
        constant_liar=True,
        multivariate=True,
        group=True,
        n_startup_trials=startup_trials(spec),
    )
    study = optuna.create_study(sampler=sampler)
    running: list[tuple[optuna.trial.Trial, dict]] = []
    points = []
    for _ in range(count):
        if len(running) == parallel:
            trial, params = running.pop(0)
            study.tell(trial, objective(params))
        trial = study.ask()
        params = suggest_params(trial, spec.parameters)
        points.append(params)
        running.append((trial, params))
    return points


def kubetune_run(
    spec: ExperimentSpec, objective, count: int, parallel: int
) -> tuple[list[dict], list[dict]]:
    """kubetune's suggestions under the same protocol, each from the stored history alone
    (the study attributes go through JSON, as the history does)."""
    trials: list[SamplerTrial] = []
    attrs: dict = {}
    points, attrs_seen = [], []
    for number in range(count):
        if number >= parallel:
            ending = trials[number - parallel]
            trials[number - parallel] = SamplerTrial(
                ending.number,
                ending.params,
                SamplerState.COMPLETE,
                objective(ending.params),
                system_attrs=ending.system_attrs,
            )
        suggestion = suggest(spec, trials, attrs, number)
        assert suggestion is not None
        attrs = json.loads(json.dumps(suggestion.study_attrs))
        points.append(suggestion.params)
        attrs_seen.append(attrs)
        # What the engine stores of the sampler's memory of the trial (TPE's relative
        # params, which constant liar reads for a running trial), through JSON too.
        stored = json.loads(json.dumps(suggestion.system_attrs))
        trials.append(
            SamplerTrial(number, suggestion.params, SamplerState.RUNNING, system_attrs=stored)
        )
    return points, attrs_seen


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("seed", [0, 3])
def test_tpe_draws_what_optunas_long_lived_sampler_draws(parallel: int, seed: int) -> None:
    spec = make_spec(parameters=UNIT_BOX_4D, algorithm={"name": "tpe", "seed": seed})
    ours, attrs = kubetune_run(spec, bowl, 24, parallel)
    assert ours == optuna_long_lived(spec, bowl, 24, parallel)
    # The random start-up trials (until 10 have finished: 10 + p - 1 of them) leave the
    # stream alone; it moves on with every suggestion after them.
    positions = [a.get(TPE_STREAM_ATTR) for a in attrs]
    startup = 10 + parallel - 1
    assert positions[:startup] == [None] * startup
    assert all(b > a for a, b in zip(positions[startup:], positions[startup + 1 :], strict=False))


def test_tpe_on_a_conditional_space_draws_what_optuna_draws() -> None:
    spec = make_spec(
        parameters=[*CONDITIONAL, LR],
        algorithm={"name": "tpe", "seed": 5, "startupTrials": 3},
        budget={"maxTrials": 100},
    )
    ours, _ = kubetune_run(spec, score, 20, 2)
    assert ours == optuna_long_lived(spec, score, 20, 2)


def test_a_batch_of_suggestions_moves_the_stream_as_one_at_a_time_does() -> None:
    spec = make_spec(parameters=UNIT_BOX_4D, algorithm={"name": "tpe", "seed": 2})
    done = [
        SamplerTrial(n, p, SamplerState.COMPLETE, bowl(p))
        for n, p in enumerate(kubetune_run(spec, bowl, 12, 1)[0])
    ]
    batch = suggest_many(spec, done, {}, [12, 13, 14])
    one_by_one, trials, attrs = [], list(done), {}
    for number in (12, 13, 14):
        suggestion = suggest(spec, trials, attrs, number)
        assert suggestion is not None
        one_by_one.append(suggestion)
        attrs = suggestion.study_attrs
        trials.append(SamplerTrial(number, suggestion.params, SamplerState.RUNNING))
    assert [s.params for s in batch if s] == [s.params for s in one_by_one]
    assert [s.study_attrs for s in batch if s] == [s.study_attrs for s in one_by_one]


def test_the_position_is_the_words_the_generator_drew() -> None:
    generator = np.random.RandomState(11)
    drawn = random.Random(1).randrange(5000, 9000)
    generator.random_sample(drawn // 2)  # a double takes two words
    assert np.array_equal(generator_at(11, drawn).get_state()[1], generator.get_state()[1])
    assert generator_at(11, drawn).random_sample() == generator.random_sample()


@pytest.mark.parametrize("position", [-1, 10**12, "12", 3.5])
def test_a_position_that_is_not_one_is_refused_not_drawn_for_ever(position: object) -> None:
    spec = make_spec(parameters=UNIT_BOX_4D, algorithm={"name": "tpe", "seed": 2})
    done = [
        SamplerTrial(n, p, SamplerState.COMPLETE, bowl(p))
        for n, p in enumerate(kubetune_run(spec, bowl, 10, 1)[0])
    ]
    with pytest.raises(ValueError, match=TPE_STREAM_ATTR):
        suggest(spec, done, {TPE_STREAM_ATTR: position}, 10)
