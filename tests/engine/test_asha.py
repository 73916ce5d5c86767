"""ASHA, promotion-based (Li et al., MLSys 2020, algorithm 2), driven through the engine.

get_job(): for k = K-1 … 0, the trials of rung k in its top ⌊|rung k|/η⌋ that were not
promoted from it yet are promotable; promote one (highest rung first) to rung k+1, else
start a new trial at rung 0.
"""

from __future__ import annotations

import random

import pytest

from kubetune.engine import MAX_TRIALS_REACHED, LaunchTrial
from kubetune.events import ExitKind, Reported
from kubetune.schedulers.asha import ASHA
from kubetune.trials import Attempt, Decision, TrialPhase, TrialRecord

from .helpers import Driver, launches, make_spec


def asha_spec(max_resource: int, max_trials: int, parallel: int = 1, goal: str = "minimize"):
    return make_spec(
        scheduler={
            "name": "asha",
            "resource": "epoch",
            "minResource": 1,
            "maxResource": max_resource,
            "reductionFactor": 3,
        },
        budget={"maxTrials": max_trials, "parallelTrials": parallel},
        goal=goal,
    )


# Trial n's loss at step s is BASE[n] + 10/s: every trial improves with training, and at any
# rung the ranking is the ranking of BASE.
BASE = [5.0, 3.0, 8.0, 1.0, 6.0, 2.0, 7.0, 4.0, 0.5]


def loss(number: int, step: int) -> float:
    return BASE[number] + 10 / step


def test_asha_scripted_sequence_one_worker() -> None:
    """η = 3, rungs 1, 3, 9, one worker, nine trials. Worked by hand (r0, r1 = rung 0, 1,
    listing trials best first; "top" is the top ⌊n/3⌋):

      t0 5 ends at r0 {t0}: top 0              -> new t1
      t1 3 r0 {t1 t0}: top 0                    -> new t2
      t2 8 r0 {t1 t0 t2}: top 1 = t1 (paused)  -> promote t1 to 3
      t1 r1 {t1}: top 0; r0 top t1 promoted    -> new t3
      t3 1 r0 {t3 t1 t0 t2}: top 1 = t3         -> promote t3 to 3
      t3 r1 {t3 t1}: top 0; r0 top t3 promoted -> new t4
      t4 6 r0 n=5: top 1 = t3 promoted          -> new t5
      t5 2 r0 n=6: top 2 = t3, t5               -> promote t5 to 3
      t5 r1 {t3 t5 t1}: top 1 = t3 (paused)    -> promote t3 to 9 (higher rung first)
      t3 reaches 9: Completed; nothing promotable -> new t6
      t6 7 r0 n=7: top 2 = t3, t5 promoted      -> new t7
      t7 4 r0 n=8: top 2 = t3, t5               -> new t8
      t8 0.5 r0 n=9: top 3 = t8, t3, t5         -> promote t8 to 3
      t8 r1 {t8 t3 t5 t1}: top 1 = t8           -> promote t8 to 9
      t8 Completed; nothing promotable, 9 trials exist -> experiment ends.
    """
    driver = Driver(asha_spec(max_resource=9, max_trials=9))
    while True:
        actions = driver.decide()
        if driver.finished is not None:
            assert not [a for a in actions if isinstance(a, LaunchTrial)]
            break
        (launch,) = [a for a in actions if isinstance(a, LaunchTrial)]
        trial = driver.engine.trials[launch.number]
        assert launch.target is not None
        first = (trial.last_step or 0) + 1  # a resumed trial goes on after its checkpoint
        for step in range(first, launch.target + 1):
            verdict = driver.report(launch.number, step, loss(launch.number, step))
            if step < launch.target:
                assert verdict.decision is Decision.CONTINUE, (launch, step)
        if launch.target < 9:
            assert verdict.decision is Decision.PAUSE, launch
            assert driver.exit(launch.number)
            assert trial.phase is TrialPhase.PAUSED
        else:
            assert verdict.decision is Decision.STOP
            assert verdict.final is TrialPhase.COMPLETED
            assert driver.exit(launch.number)
            assert trial.phase is TrialPhase.COMPLETED

    assert launches(driver.actions) == [
        (0, 1, False, 1),
        (1, 1, False, 1),
        (2, 1, False, 1),
        (1, 2, True, 3),
        (3, 1, False, 1),
        (3, 2, True, 3),
        (4, 1, False, 1),
        (5, 1, False, 1),
        (5, 2, True, 3),
        (3, 3, True, 9),
        (6, 1, False, 1),
        (7, 1, False, 1),
        (8, 1, False, 1),
        (8, 2, True, 3),
        (8, 3, True, 9),
    ]
    engine = driver.engine
    assert driver.finished is not None
    assert driver.finished.succeeded
    assert driver.finished.reason == MAX_TRIALS_REACHED
    phases = {t.number: t.phase for t in engine.trials}
    assert phases == {
        n: TrialPhase.COMPLETED if n in (3, 8) else TrialPhase.STOPPED for n in range(9)
    }
    assert all(t.reason == "not promoted" for t in engine.trials if t.number not in (3, 8))
    # Rung values are the values when the rung was reached, not the latest ones.
    assert engine.trials[3].rung_values == {0: loss(3, 1), 1: loss(3, 3), 2: loss(3, 9)}
    assert engine.trials[1].rung_values == {0: loss(1, 1), 1: loss(1, 3)}
    best = engine.best()
    assert best is not None
    assert (best.number, best.value, best.resource) == (8, loss(8, 9), 9)


def test_asha_pauses_at_the_target_rung_and_not_before() -> None:
    driver = Driver(asha_spec(max_resource=27, max_trials=2, parallel=2))
    driver.decide()
    # Trial 0 skips ahead in one report: it is paused at the first report at or past 1.
    verdict = driver.report(0, 2, 4.0)
    assert verdict.decision is Decision.PAUSE
    assert driver.engine.trials[0].rung_values == {0: 4.0}
    # Told once; a trial that keeps going hears the same answer, and no rung is recorded.
    again = driver.report(0, 3, 3.0)
    assert again == verdict
    assert driver.engine.trials[0].rung_values == {0: 4.0}


def test_only_the_first_value_at_a_rung_is_marked_with_the_rung() -> None:
    """Reports past a rung the trial already has a value for decide nothing (its rung
    value is its first there), so they carry no rung: the operator writes them late and
    thins them. While they carried it, every report after rung 0 was written ahead."""
    driver = Driver(asha_spec(max_resource=27, max_trials=1))
    driver.decide()
    rungs: dict[int, int | None] = {}

    def reported(step: int, metrics: dict[str, float]) -> None:
        driver.engine.report(0, driver.attempt(0), step, metrics, driver.now)
        event = driver.engine.history[-1]
        assert isinstance(event, Reported) and event.step == step
        rungs[step] = event.rung

    reported(1, {"loss": 9.0})  # rung 0 (1): paused there
    for step in (3, 9):
        assert driver.exit(0)
        driver.decide()  # the only trial is promoted, to 3 and then to 9
        reported(step - 1, {"loss": 8.0})
        reported(step, {"accuracy": 0.5})  # at the rung without the objective: no value
        reported(step + 1, {"loss": 7.0 if step == 3 else 5.0})  # its value at the rung
    assert rungs == {1: 0, 2: None, 3: None, 4: 1, 8: None, 9: None, 10: 2}
    assert driver.engine.trials[0].rung_values == {0: 9.0, 1: 7.0, 2: 5.0}


def record(number: int, phase: TrialPhase, rung_values: dict[int, float]) -> TrialRecord:
    trial = TrialRecord(number, f"exp-{number}", phase=phase)
    trial.rung_values = dict(rung_values)
    trial.attempts = [Attempt(1, False, 1)]
    return trial


def test_asha_policy_top_fraction_counts_the_whole_rung() -> None:
    """Called directly: rung 0 holds 7 trials, so ⌊7/3⌋ = 2 are promotable; the third best is
    not, though it is paused. Trials promoted from rung 0 still count in rung 0."""
    policy = ASHA([1, 3, 9], 3, sign=1.0)
    trials = [
        record(0, TrialPhase.PAUSED, {0: 0.9}),
        record(1, TrialPhase.RUNNING, {0: 0.1}),  # promoted, training to 3
        record(2, TrialPhase.PAUSED, {0: 0.3}),  # second best: promotable
        record(3, TrialPhase.PAUSED, {0: 0.4}),  # third best: not in the top 2
        record(4, TrialPhase.PAUSED, {0: 0.8}),
        record(5, TrialPhase.PAUSED, {0: 0.7}),
        record(6, TrialPhase.PAUSED, {0: 0.6}),
    ]
    assert [(t.number, r) for t, r in policy.promotions(trials, 5)] == [(2, 3)]
    # Maximizing turns the ranking over: the top two are 0 (0.9) and 4 (0.8).
    flipped = ASHA([1, 3, 9], 3, sign=-1.0)
    assert [(t.number, r) for t, r in flipped.promotions(trials, 5)] == [(0, 3), (4, 3)]
    assert [(t.number, r) for t, r in flipped.promotions(trials, 1)] == [(0, 3)]
    assert flipped.promotions(trials, 0) == []


def test_asha_policy_promotes_from_the_highest_rung_first() -> None:
    """Rung 1 holds 3 trials (top ⌊3/3⌋ = 1: t1, paused there); rung 0 holds 6 (top 2:
    t1, promoted already, and t2, paused). One free slot goes to rung 1's t1 (to 9), the
    next to t2 (to 3). In a running engine a slot frees with each pause, so this order only
    shows when slots are fewer than candidates; hence the direct call."""
    policy = ASHA([1, 3, 9], 3, sign=1.0)
    trials = [
        record(0, TrialPhase.PAUSED, {0: 0.50, 1: 0.40}),
        record(1, TrialPhase.PAUSED, {0: 0.10, 1: 0.05}),
        record(2, TrialPhase.PAUSED, {0: 0.20}),
        record(3, TrialPhase.PAUSED, {0: 0.30, 1: 0.25}),
        record(4, TrialPhase.PAUSED, {0: 0.60}),
        record(5, TrialPhase.PAUSED, {0: 0.70}),
    ]
    assert [(t.number, r) for t, r in policy.promotions(trials, 1)] == [(1, 9)]
    assert [(t.number, r) for t, r in policy.promotions(trials, 3)] == [(1, 9), (2, 3)]


@pytest.mark.parametrize("max_trials", [30, 7])
@pytest.mark.parametrize("seed", range(8))
def test_asha_matches_reference_with_parallel_workers(seed: int, max_trials: int) -> None:
    """Random interleavings of reports, exits and interruptions with several workers; before
    each decide, algorithm 2 computed from what the trials reported (not from the engine's
    records) says which trials are promoted, and how many new trials start. Once all
    trials exist and nothing is promotable, a rung no active trial can join promotes at
    least its best (with 7 trials, rung 1 holds 2: without that rule no one reaches 27)."""
    rng = random.Random(seed)
    goal = rng.choice(["minimize", "maximize"])
    sign = 1.0 if goal == "minimize" else -1.0
    parallel = rng.choice([2, 3, 4])
    rungs = [1, 3, 9, 27]
    eta = 3
    base = [rng.random() for _ in range(max_trials)]

    def value(number: int, step: int) -> float:
        return base[number] + sign / step  # improving with steps, whatever the goal

    driver = Driver(asha_spec(max_resource=27, max_trials=max_trials, parallel=parallel, goal=goal))
    rung_table: list[dict[int, float]] = [{} for _ in rungs]
    paused_at: dict[int, int] = {}  # trial -> rung it is paused at
    running: dict[int, int] = {}  # trial -> target
    last_step: dict[int, int] = {}
    attempts: dict[int, int] = {}
    interrupted: dict[int, int] = {}  # trial -> target, waiting to be relaunched
    completed: set[int] = set()
    interruptions = 0
    created = 0

    def reached(number: int) -> int:
        return max((k for k, table in enumerate(rung_table) if number in table), default=-1)

    def next_promotion(taken: set[int], active: set[int]) -> tuple[int, int] | None:
        for closing in (False, True):
            if closing and created < max_trials:
                break
            for k in range(len(rungs) - 2, -1, -1):
                ranked = sorted(rung_table[k].items(), key=lambda kv: (sign * kv[1], kv[0]))
                quota = len(ranked) // eta
                if closing and not any(reached(n) < k for n in active):
                    quota = max(quota, 1)
                for n, _ in ranked[:quota]:
                    if paused_at.get(n) == k and n not in taken:
                        return n, rungs[k + 1]
        return None

    for _ in range(5000):
        free = parallel - len(running) - len(interrupted)
        promoted: list[tuple[int, int]] = []
        active = set(running) | set(interrupted)
        while len(promoted) < free:
            found = next_promotion({n for n, _ in promoted}, active)
            if found is None:
                break
            promoted.append(found)
            active.add(found[0])
        new = min(free - len(promoted), max_trials - created)
        expected = {(n, attempts[n] + 1, True, target) for n, target in interrupted.items()}
        expected |= {(n, attempts[n] + 1, True, target) for n, target in promoted}
        expected |= {(n, 1, False, 1) for n in range(created, created + new)}

        actions = driver.decide()
        assert set(launches(actions)) == expected
        if not expected and not running:
            assert driver.finished is not None
            break
        for n, attempt, _, target in expected:
            attempts[n] = attempt
            running[n] = target
            paused_at.pop(n, None)
            interrupted.pop(n, None)
        created += new

        # One thing happens to one running trial.
        number = rng.choice(sorted(running))
        target = running[number]
        if rng.random() < 1.5 / max_trials:  # 5% with 30 trials; some with 7 too
            assert driver.exit(number, None, ExitKind.INTERRUPTED)
            interrupted[number] = running.pop(number)
            interruptions += 1
            continue
        step = last_step.get(number, 0) + 1
        last_step[number] = step
        verdict = driver.report(number, step, value(number, step))
        if step in rungs:
            rung_table[rungs.index(step)][number] = value(number, step)
        if step < target:
            assert verdict.decision is Decision.CONTINUE
            continue
        del running[number]
        assert driver.exit(number)
        if step == rungs[-1]:
            assert (verdict.decision, verdict.final) == (Decision.STOP, TrialPhase.COMPLETED)
            completed.add(number)
        else:
            assert verdict.decision is Decision.PAUSE
            paused_at[number] = rungs.index(step)
    else:
        pytest.fail("the experiment did not end")

    engine = driver.engine
    assert len(engine.trials) == max_trials
    assert {t.number for t in engine.trials if t.phase is TrialPhase.COMPLETED} == completed
    assert completed  # someone trained to the top
    assert all(t.phase is TrialPhase.STOPPED for t in engine.trials if t.number not in completed)
    # Interrupted attempts (some there were) were resumed, not failed, and counted.
    assert interruptions > 0
    assert sum(t.interruptions for t in engine.trials) == interruptions
    assert not any(t.phase is TrialPhase.FAILED for t in engine.trials)
