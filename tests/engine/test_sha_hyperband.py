"""Synchronous successive halving and Hyperband, driven through the engine."""

from __future__ import annotations

from collections import defaultdict

import pytest

from kubetune.engine import SEARCH_SPACE_EXHAUSTED, LaunchTrial
from kubetune.trials import Decision, TrialPhase

from .helpers import Driver, launches, make_spec, real_sampler

# Trial n's loss is BASE[n] + 10/step: at any rung the ranking is BASE's.
BASE = [5.0, 3.0, 8.0, 1.0, 6.0, 2.0, 7.0, 4.0, 0.5]


def sha_spec(max_trials: int, parallel: int, name: str = "sha", max_resource: int = 9):
    return make_spec(
        scheduler={
            "name": name,
            "resource": "epoch",
            "minResource": 1,
            "maxResource": max_resource,
            "reductionFactor": 3,
        },
        budget={"maxTrials": max_trials, "parallelTrials": parallel},
    )


def train(driver: Driver, number: int, loss, upto: int | None = None) -> None:
    """Trial `number` reports each step from its checkpoint to its target (or `upto`), then
    exits 0 if it was told to pause or stop."""
    trial = driver.engine.trials[number]
    target = trial.attempt.target
    end = target if upto is None else upto
    for step in range((trial.last_step or 0) + 1, end + 1):
        verdict = driver.report(number, step, loss(number, step))
        assert (verdict.decision is Decision.CONTINUE) == (step < target), (number, step)
    if end == target:
        assert driver.exit(number)


def test_sha_waits_for_the_rung_then_promotes_floor_n_over_eta() -> None:
    """η = 3, rungs 1, 3, 9, nine trials, three workers; trial 6 crashes before reporting.

    Rung 0 is full once each of the nine has reached it or ended: 8 values, t6 failed.
    Ranked: t8 0.5, t3 1, t5 2, t1 3, t7 4, t0 5, t4 6, t2 8 -> top ⌊9/3⌋ = 3: t8 t3 t5.
    Rung 1 is full once t8, t3, t5 have reached 3; top ⌊9/9⌋ = 1: t8, trained to 9.
    """

    def loss(n: int, step: int) -> float:
        return BASE[n] + 10 / step

    driver = Driver(sha_spec(max_trials=9, parallel=3))
    assert launches(driver.decide()) == [(0, 1, False, 1), (1, 1, False, 1), (2, 1, False, 1)]
    for n in (0, 1, 2):
        train(driver, n, loss)
    assert launches(driver.decide()) == [(3, 1, False, 1), (4, 1, False, 1), (5, 1, False, 1)]
    for n in (3, 4, 5):
        train(driver, n, loss)
    assert all(t.phase is TrialPhase.PAUSED for t in driver.engine.trials)
    assert launches(driver.decide()) == [(6, 1, False, 1), (7, 1, False, 1), (8, 1, False, 1)]
    assert driver.exit(6, code=1)  # crashed
    train(driver, 7, loss)
    # 7 of the 8 that will arrive are in, and two workers are free: nobody moves.
    assert driver.decide() == []
    train(driver, 8, loss)
    assert launches(driver.decide()) == [(3, 2, True, 3), (5, 2, True, 3), (8, 2, True, 3)]
    train(driver, 8, loss)
    train(driver, 3, loss)
    assert driver.decide() == []  # t5 has not reached rung 1 yet
    train(driver, 5, loss, upto=2)
    assert driver.decide() == []
    train(driver, 5, loss)
    assert launches(driver.decide()) == [(8, 3, True, 9)]
    train(driver, 8, loss)
    actions = driver.decide()
    assert driver.finished is not None and driver.finished.succeeded
    assert not [a for a in actions if isinstance(a, LaunchTrial)]

    phases = {t.number: t.phase for t in driver.engine.trials}
    expected = {n: TrialPhase.STOPPED for n in range(9)}
    expected |= {8: TrialPhase.COMPLETED, 6: TrialPhase.FAILED}
    assert phases == expected
    best = driver.engine.best()
    assert best is not None and best.number == 8


def test_sha_failure_of_a_promoted_trial_does_not_block_the_next_rung() -> None:
    """As above without the crash at rung 0; t3 (promoted to 3) crashes on the way.

    Rung 0 top 3: t8 t3 t5. t3 fails at step 2. Current policy: failed trials take no
    place in a rung's ranking, so the next best at rung 0, t1, takes t3's place and is
    promoted (one more trial resumes; the bracket still sends ⌊9/3⌋ = 3 live trials on).
    Rung 1 is then full when t8, t5 and t1 have reached it or ended; top 1 = t8.
    """

    def loss(n: int, step: int) -> float:
        return BASE[n] + 10 / step

    driver = Driver(sha_spec(max_trials=9, parallel=9))
    assert len(launches(driver.decide())) == 9
    for n in range(9):
        train(driver, n, loss)
    assert launches(driver.decide()) == [(3, 2, True, 3), (5, 2, True, 3), (8, 2, True, 3)]
    train(driver, 3, loss, upto=2)
    assert driver.exit(3, code=1)
    assert driver.engine.trials[3].phase is TrialPhase.FAILED
    assert launches(driver.decide()) == [(1, 2, True, 3)]
    train(driver, 8, loss)
    train(driver, 5, loss)
    assert driver.decide() == []  # t1 is on its way to rung 1
    train(driver, 1, loss)
    assert launches(driver.decide()) == [(8, 3, True, 9)]
    train(driver, 8, loss)
    driver.decide()
    assert driver.finished is not None and driver.finished.succeeded


def test_sha_every_trial_failing_at_a_rung_still_ends() -> None:
    driver = Driver(sha_spec(max_trials=3, parallel=3))
    driver.decide()
    for n in range(3):
        driver.report(n, 1, float("nan"))
        assert driver.exit(n)
    driver.decide()
    assert driver.finished is not None
    assert not driver.finished.succeeded  # no finite objective anywhere
    assert all(t.phase is TrialPhase.FAILED for t in driver.engine.trials)


def test_hyperband_through_the_engine() -> None:
    """rungs 1, 3, 9, 15 trials: brackets t0-t8 @1 (9), t9-t13 @3 (5), t14 @9 (1, truncated).

    BASE(n) = 7n mod 15: t0 0, t1 7, t2 14, t3 6, t4 13, t5 5, t6 12, t7 4, t8 11,
    t9 3, t10 10, t11 2, t12 9, t13 1, t14 8.
      bracket 0: rung 0 top ⌊9/3⌋ = 3: t0 t7 t5; rung 1 top ⌊9/9⌋ = 1: t0 -> 9.
      bracket 1 starts at 3: top ⌊5/3⌋ = 1: t13 -> 9.
      bracket 2 starts at 9: t14 runs straight to the end.
    """

    def loss(n: int, step: int) -> float:
        return (7 * n) % 15 + 10 / step

    driver = Driver(sha_spec(max_trials=15, parallel=5, name="hyperband"))
    targets: dict[int, list[int]] = defaultdict(list)
    reached: dict[int, set[int]] = defaultdict(set)  # trial -> resources it reported at
    bracket_of = {n: 0 if n < 9 else 1 if n < 14 else 2 for n in range(15)}
    for _ in range(100):
        actions = driver.decide()
        if driver.finished is not None:
            break
        for number, _, resume, target in launches(actions):
            targets[number].append(target)
            if resume:
                # Synchronous: every member of the bracket exists, and each one sent on to
                # the rung below the target has reached it (or ended) before anyone moves up.
                below = {3: 1, 9: 3}[target]
                members = [m for m, b in bracket_of.items() if b == bracket_of[number]]
                assert all(targets[m] for m in members), (number, target)
                assert all(
                    below in reached[m] or driver.engine.trials[m].phase.is_final
                    for m in members
                    if max(targets[m]) >= below
                ), (number, target)
        for trial in driver.engine.running():
            train(driver, trial.number, loss)
            reached[trial.number] |= {1, 3, 9} & set(range(1, trial.last_step + 1))
    assert driver.finished is not None

    expected = {n: [1] for n in range(9)} | {n: [3] for n in range(9, 14)} | {14: [9]}
    expected |= {0: [1, 3, 9], 7: [1, 3], 5: [1, 3], 13: [3, 9]}
    assert dict(targets) == expected
    completed = {t.number for t in driver.engine.trials if t.phase is TrialPhase.COMPLETED}
    assert completed == {0, 13, 14}
    # A bracket's rungs start at its first rung: t9 never has a rung-0 value.
    assert set(driver.engine.trials[9].rung_values) == {1}
    assert set(driver.engine.trials[14].rung_values) == {2}
    best = driver.engine.best()
    assert best is not None and best.number == 0


@pytest.mark.parametrize("name", ["sha", "hyperband"])
def test_brackets_shrink_to_the_trials_a_grid_can_give(name: str) -> None:
    """A grid of 4 points under maxTrials 9: the bracket can never hold 9 trials. Sized to
    the 4 that exist (also Hyperband's first bracket, truncated at 4):
    rung 0 top max(1, ⌊4/3⌋) = 1 -> w=0; rung 1 top max(1, ⌊4/9⌋) = 1 -> w=0 trains to 9."""
    spec = make_spec(
        parameters=[{"name": "w", "type": "int", "min": 0, "max": 3}],
        algorithm={"name": "grid", "seed": 1},
        scheduler={"name": name, "resource": "epoch", "minResource": 1, "maxResource": 9},
        budget={"maxTrials": 9, "parallelTrials": 2},
    )
    driver = Driver(spec, sample=real_sampler)

    def loss(n: int, step: int) -> float:
        return driver.engine.trials[n].params["w"] + 10 / step

    for _ in range(50):
        driver.decide()
        if driver.finished is not None:
            break
        for trial in driver.engine.running():
            train(driver, trial.number, loss)
    assert driver.finished is not None
    assert driver.finished.reason == SEARCH_SPACE_EXHAUSTED
    trials = driver.engine.trials
    assert len(trials) == 4
    (winner,) = [t for t in trials if t.phase is TrialPhase.COMPLETED]
    assert winner.params == {"w": 0} and winner.last_step == 9
    assert [a.target for a in winner.attempts] == [1, 3, 9]
    assert all(t.last_step == 1 for t in trials if t is not winner)
    best = driver.engine.best()
    assert best is not None and best.resource == 9
