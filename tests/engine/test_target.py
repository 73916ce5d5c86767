"""`objective.target`: the experiment succeeds as soon as the best value reaches it."""

from __future__ import annotations

import pytest
import yaml

from kubetune.engine import MAX_TRIALS_REACHED, TARGET_REACHED, Engine, FinishExperiment
from kubetune.spec import SpecError, parse_experiment
from kubetune.trials import Decision, TrialPhase

from .helpers import Driver, json_round_trip, launches, make_spec, stops


def with_target(target: float, goal: str = "minimize", **budget: int):
    spec = make_spec(goal=goal, budget={"maxTrials": 10, "parallelTrials": 3, **budget})
    objective = spec.objective.model_copy(update={"target": target})
    return spec.model_copy(update={"objective": objective})


def finish_of(actions: list) -> FinishExperiment:
    (finish,) = [a for a in actions if isinstance(a, FinishExperiment)]
    return finish


def test_reaching_the_target_stops_running_trials_then_succeeds() -> None:
    driver = Driver(with_target(0.05))
    assert [n for n, *_ in launches(driver.decide())] == [0, 1, 2]
    driver.report(0, 1, 0.5)
    driver.report(1, 1, 0.2)
    assert driver.decide() == []  # 0.2 is not 0.05 yet: nothing to do
    driver.report(2, 1, 0.3)
    assert driver.exit(2)  # completed at 0.3
    assert launches(driver.decide()) == [(3, 1, False, None)]
    driver.report(3, 1, 0.04)
    assert driver.exit(3)  # completed at 0.04: the best now reaches the target
    actions = driver.decide()
    assert sorted(stops(actions)) == [(0, 1, TARGET_REACHED), (1, 1, TARGET_REACHED)]
    assert not launches(actions), "no new trial once the target is reached"
    assert not [a for a in actions if isinstance(a, FinishExperiment)]
    told = driver.report(0, 2, 0.45)  # a trial that reports meanwhile hears stop
    assert (told.decision, told.final) == (Decision.STOP, TrialPhase.STOPPED)
    assert driver.exit(0, code=0) and driver.exit(1, code=-15)
    finish = finish_of(driver.decide())
    assert (finish.succeeded, finish.reason) == (True, TARGET_REACHED)
    assert finish.message == "best trial exp-3: loss=0.04 reached the target 0.05"
    phases = [t.phase for t in driver.engine.trials]
    assert phases == [
        TrialPhase.STOPPED,
        TrialPhase.STOPPED,
        TrialPhase.COMPLETED,
        TrialPhase.COMPLETED,
    ]
    assert len(driver.engine.trials) == 4  # of maxTrials 10


@pytest.mark.parametrize(
    ("goal", "target", "values", "reached"),
    [
        ("minimize", 0.5, [0.9, 0.5], True),  # equal counts: "at most"
        ("minimize", 0.5, [0.9, 0.51], False),
        ("maximize", 0.9, [0.2, 0.9], True),  # "at least"
        ("maximize", 0.9, [0.2, 0.89], False),
    ],
)
def test_the_target_is_reached_at_equality_in_the_goal_s_direction(
    goal: str, target: float, values: list[float], reached: bool
) -> None:
    driver = Driver(with_target(target, goal=goal, maxTrials=2, parallelTrials=1))
    for number, value in enumerate(values):
        driver.decide()
        driver.report(number, 1, value)
        assert driver.exit(number)
    finish = finish_of(driver.decide())
    assert finish.reason == (TARGET_REACHED if reached else MAX_TRIALS_REACHED)


def test_no_target_runs_the_whole_budget() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 3, "parallelTrials": 1}))
    for number in range(3):
        driver.decide()
        driver.report(number, 1, -100.0)
        assert driver.exit(number)
    assert finish_of(driver.decide()).reason == MAX_TRIALS_REACHED


def test_a_rebuilt_engine_ends_the_same_way_and_a_raised_budget_does_not_reopen_it() -> None:
    spec = with_target(0.1, maxTrials=5, parallelTrials=1)
    driver = Driver(spec)
    driver.decide()
    driver.report(0, 1, 0.05)
    assert driver.exit(0)
    assert finish_of(driver.decide()).reason == TARGET_REACHED
    rebuilt = Engine.replay(spec, "exp", json_round_trip(driver.engine.history))
    assert rebuilt.ended is not None and rebuilt.ended.reason == TARGET_REACHED
    rebuilt.update_spec(
        spec.model_copy(update={"budget": spec.budget.model_copy(update={"maxTrials": 50})})
    )
    assert not rebuilt.reopen(2000.0)
    assert rebuilt.decide(2000.0) == []


@pytest.mark.parametrize("bad", [".inf", "-.inf", ".nan"])
def test_a_target_that_is_not_a_finite_number_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_experiment(document_with_target(bad))
    assert error.value.problems == [
        ("spec.objective.target", f"must be a finite number, got {float(bad.replace('.', ''))}")
    ]


def test_a_finite_target_is_read() -> None:
    assert parse_experiment(document_with_target("0.05")).spec.objective.target == 0.05


def document_with_target(target: str) -> dict:
    return yaml.safe_load(
        f"""
apiVersion: kubetune.dev/v1alpha1
kind: HPOExperiment
metadata: {{name: t}}
spec:
  objective: {{metric: loss, goal: minimize, target: {target}}}
  parameters: [{{name: x, type: float, min: 0, max: 1}}]
  budget: {{maxTrials: 2}}
  trialTemplate: {{spec: {{containers: [{{name: t, command: [python]}}]}}}}
"""
    )


def test_reports_during_the_wind_down_do_not_undo_the_target() -> None:
    # No trial has completed: the best is the best at the furthest step. Trial 1 reaches
    # the target at step 2; trial 0 then reports step 3 before it stops, which alone would
    # make it the best (further trained) and the target no longer reached.
    driver = Driver(with_target(0.05, maxTrials=10, parallelTrials=2))
    driver.decide()
    driver.report(0, 1, 0.9)
    driver.report(1, 1, 0.8)
    driver.report(0, 2, 0.7)
    driver.report(1, 2, 0.03)
    assert sorted(stops(driver.decide())) == [(0, 1, TARGET_REACHED), (1, 1, TARGET_REACHED)]
    driver.report(0, 3, 0.6)
    assert driver.exit(0, code=-15)
    assert driver.decide() == [], "a freed slot is not filled once the target is reached"
    assert driver.exit(1, code=-15)
    finish = finish_of(driver.decide())
    assert (finish.succeeded, finish.reason) == (True, TARGET_REACHED)
    # The trial that reached the target is done (Completed), so it stays the best.
    trials = driver.engine.trials
    assert [(t.phase, t.reason) for t in trials] == [
        (TrialPhase.STOPPED, TARGET_REACHED),
        (TrialPhase.COMPLETED, TARGET_REACHED),
    ]
    best = driver.engine.best()
    assert best is not None and (best.number, best.value) == (1, 0.03)
    assert finish.message == "best trial exp-1: loss=0.03 reached the target 0.05"
    rebuilt = Engine.replay(driver.spec, "exp", json_round_trip(driver.engine.history))
    assert [(t.phase, t.reason) for t in rebuilt.trials] == [(t.phase, t.reason) for t in trials]
