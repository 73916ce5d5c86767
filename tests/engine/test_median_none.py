"""Median stopping (Optuna's MedianPruner semantics) and the `none` scheduler."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.pruners import MedianPruner
from optuna.trial import TrialState, create_trial

from kubetune.schedulers import make_scheduler
from kubetune.schedulers.median import MedianStopping, NoScheduler
from kubetune.trials import Decision, StepValues, TrialPhase, TrialRecord, Verdict

from .helpers import Driver, launches, make_spec


def trial(number: int, phase: TrialPhase, values: dict[int, float]) -> TrialRecord:
    record = TrialRecord(number, f"exp-{number}", phase=phase)
    record.values = StepValues(values)
    return record


def verdict(policy, own: TrialRecord, step: int, value: float, trials) -> Verdict:
    answer, rung = policy.on_report(own, step, value, trials)
    assert rung is None  # median stopping has no rungs
    return answer


def test_median_by_hand_minimize() -> None:
    """Completed: A 5, 4, 3 and B 7, 6, 5 at steps 1-3 -> medians 6, 5, 4."""
    a = trial(0, TrialPhase.COMPLETED, {1: 5.0, 2: 4.0, 3: 3.0})
    b = trial(1, TrialPhase.COMPLETED, {1: 7.0, 2: 6.0, 3: 5.0})
    policy = MedianStopping(sign=1.0, min_trials=2, warmup_steps=2, max_resource=10)

    worse = trial(2, TrialPhase.RUNNING, {1: 6.0, 2: 5.0})
    # best so far min(6, 5, 4.5) = 4.5 > median 4 at step 3: stopped.
    stopped = verdict(policy, worse, 3, 4.5, [a, b, worse])
    assert (stopped.decision, stopped.final) == (Decision.STOP, TrialPhase.STOPPED)
    # 3.9 < 4: goes on.
    assert verdict(policy, worse, 3, 3.9, [a, b, worse]).decision is Decision.CONTINUE
    # Exactly the median is not worse than it.
    assert verdict(policy, worse, 3, 4.0, [a, b, worse]).decision is Decision.CONTINUE

    # The *best* value so far counts, not the last one: 3.5 at step 1 beats every median.
    early_bird = trial(3, TrialPhase.RUNNING, {1: 3.5, 2: 9.0})
    assert verdict(policy, early_bird, 3, 6.0, [a, b, early_bird]).decision is Decision.CONTINUE

    # Warm-up: step 1 < warmupSteps 2, never stopped however bad.
    fresh = trial(4, TrialPhase.RUNNING, {})
    assert verdict(policy, fresh, 1, 100.0, [a, b, fresh]).decision is Decision.CONTINUE
    # At step 2 = warmupSteps it may be: 100 > median 5.
    assert verdict(policy, fresh, 2, 100.0, [a, b, fresh]).decision is Decision.STOP

    # minTrials: with one completed trial nothing is stopped; running and stopped trials do
    # not count as completed.
    others = [a, trial(5, TrialPhase.STOPPED, {1: 1.0, 2: 1.0}), trial(6, TrialPhase.RUNNING, {})]
    assert verdict(policy, fresh, 2, 100.0, [*others, fresh]).decision is Decision.CONTINUE

    # No completed trial reported at this step: nothing to compare with.
    assert verdict(policy, fresh, 7, 100.0, [a, b, fresh]).decision is Decision.CONTINUE


def test_median_by_hand_maximize_and_odd_count() -> None:
    """Maximize; completed values at step 2: 0.5, 0.7, 0.9 -> median 0.7."""
    completed = [
        trial(0, TrialPhase.COMPLETED, {2: 0.5}),
        trial(1, TrialPhase.COMPLETED, {2: 0.7}),
        trial(2, TrialPhase.COMPLETED, {2: 0.9}),
    ]
    policy = MedianStopping(sign=-1.0, min_trials=3, warmup_steps=0, max_resource=10)
    own = trial(3, TrialPhase.RUNNING, {1: 0.6})
    # best so far max(0.6, 0.65) = 0.65 < 0.7: stopped.
    assert verdict(policy, own, 2, 0.65, [*completed, own]).decision is Decision.STOP
    # 0.75 > 0.7: goes on.
    assert verdict(policy, own, 2, 0.75, [*completed, own]).decision is Decision.CONTINUE
    # An earlier 0.8 is its best so far: goes on although it now reports 0.1.
    lucky = trial(4, TrialPhase.RUNNING, {1: 0.8})
    assert verdict(policy, lucky, 2, 0.1, [*completed, lucky]).decision is Decision.CONTINUE


def optuna_prunes(
    completed: list[dict[int, float]],
    own: dict[int, float],
    min_trials: int,
    warmup: int,
    direction: str,
) -> bool:
    pruner = MedianPruner(n_startup_trials=min_trials, n_warmup_steps=warmup)
    study = optuna.create_study(direction=direction, pruner=pruner)
    for values in completed:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE, value=values[max(values)], intermediate_values=values
            )
        )
    running = create_trial(state=TrialState.RUNNING, intermediate_values=own)
    return pruner.prune(study, running)


@pytest.mark.parametrize("seed", range(4))
def test_median_agrees_with_optuna_median_pruner(seed: int) -> None:
    rng = random.Random(seed)
    disagreements = []
    stops = 0
    for case in range(150):
        direction = rng.choice(["minimize", "maximize"])
        sign = 1.0 if direction == "minimize" else -1.0
        min_trials = rng.randint(1, 4)
        warmup = rng.randint(0, 3)
        completed = []
        for _ in range(rng.randint(0, 6)):
            steps = sorted(rng.sample(range(1, 9), rng.randint(1, 8)))
            completed.append({s: round(rng.uniform(0, 10), 1) for s in steps})
        step = rng.randint(1, 8)
        earlier = rng.sample(range(1, step), rng.randint(0, step - 1))
        own = {s: round(rng.uniform(0, 10), 1) for s in earlier}
        value = round(rng.uniform(0, 10), 1)

        policy = MedianStopping(sign, min_trials, warmup, max_resource=100)
        records = [trial(i, TrialPhase.COMPLETED, v) for i, v in enumerate(completed)]
        mine = trial(len(records), TrialPhase.RUNNING, own)
        ours = verdict(policy, mine, step, value, [*records, mine]).decision is Decision.STOP
        theirs = optuna_prunes(completed, {**own, step: value}, min_trials, warmup, direction)
        stops += ours
        if ours != theirs:
            disagreements.append((case, direction, min_trials, warmup, completed, own, step))
    assert not disagreements
    assert stops > 10  # the cases do exercise stopping


def test_median_through_the_engine() -> None:
    spec = make_spec(
        scheduler={"name": "median", "resource": "epoch", "maxResource": 3, "minTrials": 2,
                   "warmupSteps": 1},
        budget={"maxTrials": 4, "parallelTrials": 1},
    )  # fmt: skip
    assert isinstance(make_scheduler(spec), MedianStopping)
    driver = Driver(spec)
    curves = {0: [4.0, 3.0, 2.0], 1: [6.0, 5.0, 4.0], 2: [9.0, 8.0, 1.0], 3: [4.5, 3.5, 3.0]}
    outcome = {}
    for number in range(4):
        driver.decide()
        for step, loss in enumerate(curves[number], start=1):
            answer = driver.report(number, step, loss)
            if answer.decision is not Decision.CONTINUE:
                break
        outcome[number] = (step, answer.decision, answer.final)
        assert driver.exit(number)
    driver.decide()
    # t0, t1 run to maxResource 3 (no completed trials to compare with yet).
    # t2: step 1 is warm-up (1 < 1 is false: step 1 counts) -> 9 > median(4, 6) = 5: stopped.
    # t3: 4.5 <= 5 at step 1; 3.5 <= median(3, 5) = 4 at step 2; completes at 3.
    assert outcome == {
        0: (3, Decision.STOP, TrialPhase.COMPLETED),
        1: (3, Decision.STOP, TrialPhase.COMPLETED),
        2: (1, Decision.STOP, TrialPhase.STOPPED),
        3: (3, Decision.STOP, TrialPhase.COMPLETED),
    }
    phases = [t.phase for t in driver.engine.trials]
    assert phases == [TrialPhase.COMPLETED] * 2 + [TrialPhase.STOPPED, TrialPhase.COMPLETED]
    assert driver.finished is not None
    best = driver.engine.best()
    assert best is not None and best.number == 0


def test_none_stops_only_at_max_resource() -> None:
    bounded = NoScheduler(max_resource=10)
    record = trial(0, TrialPhase.RUNNING, {})
    # Terrible values are no reason to stop.
    for step in range(1, 10):
        assert bounded.on_report(record, step, 1e9, [record]) == (Verdict.go_on(), None)
    at_max, _ = bounded.on_report(record, 10, 1e9, [record])
    assert (at_max.decision, at_max.final) == (Decision.STOP, TrialPhase.COMPLETED)
    past, _ = bounded.on_report(record, 12, 0.0, [record])
    assert past.decision is Decision.STOP
    unbounded = NoScheduler(max_resource=None)
    assert unbounded.on_report(record, 10**6, 1e9, [record]) == (Verdict.go_on(), None)
    assert bounded.promotions([record], 4) == [] and unbounded.initial_target(0) is None


def test_none_through_the_engine_runs_each_trial_to_its_own_end() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 3, "parallelTrials": 3}))
    assert [t for *_, t in launches(driver.decide())] == [None, None, None]
    for number, loss in enumerate([3.0, 1.0, 2.0]):
        for step in range(1, 50):
            assert driver.report(number, step, loss + 100 * number).decision is Decision.CONTINUE
        assert driver.exit(number)
    driver.decide()
    assert [t.phase for t in driver.engine.trials] == [TrialPhase.COMPLETED] * 3
    best = driver.engine.best()
    assert best is not None and (best.number, best.value, best.resource) == (0, 3.0, 49)
