"""Replay determinism: an engine rebuilt from its history decides what the original would."""

from __future__ import annotations

import json
import random

import pytest

from kubetune.engine import Engine, SampleTrial
from kubetune.events import ExitKind, TrialSampled, to_record
from kubetune.trials import TrialPhase

from .helpers import Driver, json_round_trip, launches, make_spec, real_sampler

PARAMETERS = [
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "opt", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "when": {"opt": "sgd"}},
]


def spec_for(scheduler: str, algorithm: str, max_trials: int = 20):
    scheduler_spec = {"name": scheduler, "resource": "epoch", "minResource": 1, "maxResource": 9}
    return make_spec(
        scheduler=scheduler_spec,
        algorithm={"name": algorithm, "seed": 11, "startupTrials": 3},
        parameters=PARAMETERS,
        budget={"maxTrials": max_trials, "parallelTrials": 3, "maxFailedTrials": 10},
    )


def loss(params: dict, step: int) -> float:
    return (params["x"] - 0.3) ** 2 + params.get("momentum", 0.5) / 4 + 1 / step


def world(driver: Driver, rng: random.Random) -> None:
    """One thing happens to one running trial, chosen by `rng` from what is observable."""
    engine = driver.engine
    running = sorted(t.number for t in engine.running())
    driver.now += 1.0
    if not running:
        return
    number = rng.choice(running)
    trial = engine.trials[number]
    roll = rng.random()
    if roll < 0.05:
        driver.exit(number, None, ExitKind.INTERRUPTED)
    elif roll < 0.08:
        driver.exit(number, code=1)
    elif trial.attempt.decision is not None:
        driver.exit(number, code=0)
    else:
        step = (trial.last_step or 0) + 1
        value = float("nan") if roll < 0.10 else loss(trial.params, step)
        driver.report(number, step, value)
        if roll > 0.9:  # a retry of the same report
            driver.report(number, step, value)


def run(driver: Driver, rng: random.Random, operations: int) -> None:
    for _ in range(operations):
        driver.decide()
        if driver.finished is not None:
            return
        world(driver, rng)


def snapshot(engine: Engine) -> str:
    """Everything the engine knows, comparable even with NaN inside (repr(nan) == 'nan')."""
    return repr(
        (
            engine.trials,
            engine.started_at,
            engine.ended,
            engine.exhausted,
            engine.study_attrs,
            engine.stop_reasons,
            engine.best(),
            engine.counts(),
        )
    )


def records(engine: Engine) -> str:
    return json.dumps([to_record(e) for e in engine.history], sort_keys=True)


@pytest.mark.parametrize(
    ("scheduler", "algorithm"),
    [("asha", "tpe"), ("hyperband", "random"), ("median", "sobol"), ("none", "cmaes")],
)
def test_replayed_engine_decides_as_the_original(scheduler: str, algorithm: str) -> None:
    spec = spec_for(scheduler, algorithm)
    original = Driver(spec, sample=real_sampler)
    run(original, random.Random(1), operations=30)
    assert original.finished is None, "half-way means not finished"
    assert len(original.engine.trials) >= 3

    rebuilt = Engine.replay(spec, "exp", list(original.engine.history))
    from_json = Engine.replay(spec, "exp", json_round_trip(original.engine.history))
    assert snapshot(rebuilt) == snapshot(original.engine)
    assert snapshot(from_json) == snapshot(original.engine)
    assert records(from_json) == records(original.engine)

    drivers = [
        original,
        Driver(spec, sample=real_sampler, engine=rebuilt, now=original.now),
        Driver(spec, sample=real_sampler, engine=from_json, now=original.now),
    ]
    for driver in drivers:
        driver.actions.clear()
        driver.verdicts.clear()
        run(driver, random.Random(2), operations=3000)
        assert driver.finished is not None
    first = drivers[0]
    # The second half did something: sampled, launched and judged.
    assert sum(isinstance(a, SampleTrial) for a in first.actions) >= 3
    assert len(launches(first.actions)) >= 5 and len(first.verdicts) >= 20
    for other in drivers[1:]:
        assert repr(other.actions) == repr(first.actions)
        assert repr(other.verdicts) == repr(first.verdicts)
        assert other.finished == first.finished
        assert snapshot(other.engine) == snapshot(first.engine)
        assert records(other.engine) == records(first.engine)


def test_replay_while_a_suggestion_is_outstanding() -> None:
    """The shell crashed between asking for a sample and recording it."""
    spec = spec_for("none", "tpe")
    engine = Engine(spec, "exp")
    (ask,) = [a for a in engine.decide(0.0) if isinstance(a, SampleTrial)]
    rebuilt = Engine.replay(spec, "exp", json_round_trip(engine.history))
    assert rebuilt.decide(0.0) == [ask]  # asks again for the same trial
    assert rebuilt.sampler_request(ask.number) == engine.sampler_request(ask.number)
    suggestion = real_sampler(rebuilt, ask.number)
    rebuilt.record_suggestion(ask.number, suggestion)
    length = len(rebuilt.history)
    rebuilt.record_suggestion(ask.number, suggestion)  # a duplicate: ignored
    assert len(rebuilt.history) == length
    assert isinstance(rebuilt.history[-1], TrialSampled)


def test_raising_max_trials_and_replaying_an_unfinished_experiment_goes_on() -> None:
    small = make_spec(budget={"maxTrials": 2, "parallelTrials": 1})
    driver = Driver(small)
    driver.decide()
    driver.report(0, 1, 1.0)
    driver.exit(0)
    driver.decide()  # launches trial 1 of 2
    bigger = make_spec(budget={"maxTrials": 4, "parallelTrials": 1})
    resumed = Driver(
        bigger, engine=Engine.replay(bigger, "exp", json_round_trip(driver.engine.history))
    )
    for number in (1, 2, 3):
        resumed.report(number, 1, float(number))
        resumed.exit(number)
        resumed.decide()
    assert len(resumed.engine.trials) == 4
    assert resumed.finished is not None and resumed.finished.succeeded


def asha_one_worker(max_trials: int):
    return make_spec(
        scheduler={"name": "asha", "resource": "epoch", "minResource": 1, "maxResource": 9},
        budget={"maxTrials": max_trials, "parallelTrials": 1},
    )


def play_asha(driver: Driver, base: list[float]) -> list:
    """One worker: each launched trial trains to its target and exits. Returns launches."""
    seen = []
    while True:
        actions = driver.decide()
        if driver.finished is not None:
            return seen
        (launch,) = launches(actions)
        seen.append(launch)
        number, _, _, target = launch
        trial = driver.engine.trials[number]
        for step in range((trial.last_step or 0) + 1, target + 1):
            driver.report(number, step, base[number] + 10 / step)
        assert driver.exit(number)


def test_raising_max_trials_reopens_a_finished_experiment() -> None:
    """ASHA η=3, rungs 1, 3, 9, one worker. With 3 trials (losses 5, 3, 8): t1 is promoted
    to 3; all trials exist and rung 1 holds t1 alone, so t1 goes on to 9 (at least one
    per rung at the close) and the experiment ends; t0 and t2 are Stopped, not promoted.
    Raised to 6 trials, they are paused again and it goes on as if it had never stopped
    (hand-worked, as in test_asha_scripted_sequence_one_worker): new t3 (1) -> promote t3
    to 3 -> new t4 (6) -> new t5 (2) -> promote t5 to 3 -> rung 1 {t3 t5 t1}: promote t3 to
    9 -> end."""
    base = [5.0, 3.0, 8.0, 1.0, 6.0, 2.0]
    small = Driver(asha_one_worker(3))
    assert play_asha(small, base) == [
        (0, 1, False, 1), (1, 1, False, 1), (2, 1, False, 1), (1, 2, True, 3),
        (1, 3, True, 9),
    ]  # fmt: skip
    ended = small.engine.ended
    reasons = [t.reason for t in small.engine.trials]
    assert ended is not None and reasons == ["not promoted", "reached maxResource", "not promoted"]

    # The same budget: nothing to reopen, a replay stays finished and launches nothing.
    same = Engine.replay(asha_one_worker(3), "exp", json_round_trip(small.engine.history))
    assert not same.reopen(small.now) and same.decide(small.now) == []

    bigger = asha_one_worker(6)
    history = json_round_trip(small.engine.history)
    replayed = Driver(bigger, engine=Engine.replay(bigger, "exp", history), now=small.now)
    assert replayed.engine.reopen(replayed.now)
    assert [t.phase for t in replayed.engine.trials] == [
        TrialPhase.PAUSED, TrialPhase.COMPLETED, TrialPhase.PAUSED,
    ]  # fmt: skip
    # The operator's way: the live engine takes the new spec and reopens.
    live = Driver(bigger, engine=small.engine, now=small.now)
    live.engine.update_spec(bigger)
    assert live.engine.reopen(live.now)

    expected = [
        (3, 1, False, 1), (3, 2, True, 3), (4, 1, False, 1), (5, 1, False, 1),
        (5, 2, True, 3), (3, 3, True, 9),
    ]  # fmt: skip
    assert play_asha(replayed, base) == expected
    assert play_asha(live, base) == expected
    assert records(replayed.engine) == records(live.engine)
    assert replayed.finished is not None and replayed.finished.succeeded
    phases = [t.phase for t in replayed.engine.trials]
    stopped, completed = TrialPhase.STOPPED, TrialPhase.COMPLETED
    assert phases == [stopped, completed, stopped, completed, stopped, stopped]
    # And the whole story, reopening included, replays to the same engine.
    again = Engine.replay(bigger, "exp", json_round_trip(replayed.engine.history))
    assert snapshot(again) == snapshot(replayed.engine)
