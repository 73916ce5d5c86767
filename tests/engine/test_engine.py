"""The engine's promises: idempotent reports, refusals, failures, budgets, interruptions."""

from __future__ import annotations

import math

import pytest

from kubetune.engine import (
    MAX_DURATION_REACHED,
    MAX_TRIALS_REACHED,
    NO_RESULTS,
    TOO_MANY_FAILED_TRIALS,
    Engine,
    FinishExperiment,
    LaunchTrial,
    StaleAttempt,
    StopTrial,
    UnknownTrial,
)
from kubetune.events import ExitKind
from kubetune.trials import Decision, TrialPhase

from .helpers import Driver, json_round_trip, launches, make_spec, stops


def asha(**budget):
    return make_spec(
        scheduler={"name": "asha", "resource": "epoch", "minResource": 1, "maxResource": 9},
        budget={"maxTrials": 4, **budget},
    )


# ----- idempotence and refusals ---------------------------------------------------------


def test_duplicate_report_gets_the_same_verdict_and_changes_nothing() -> None:
    driver = Driver(asha(parallelTrials=2))
    driver.decide()
    go_on = driver.report(0, 1, 5.0)  # ASHA target is 1: pause
    assert go_on.decision is Decision.PAUSE
    history = list(driver.engine.history)
    trial = driver.engine.trials[0]
    values, rungs = dict(trial.values), dict(trial.rung_values)

    # A retry, even one whose body differs, is answered from the record.
    for metrics in ({"loss": 5.0}, {"loss": 0.1}, {"loss": math.nan}, {}):
        again = driver.engine.report(0, 1, 1, metrics, now=2000.0)
        assert again == go_on
    assert driver.engine.history == history
    assert (trial.values, trial.rung_values) == (values, rungs)

    # Still answered after the attempt ended (a retry after a timeout, the pod gone).
    assert driver.exit(0)
    history = list(driver.engine.history)
    assert driver.engine.report(0, 1, 1, {"loss": 5.0}, now=3000.0) == go_on
    assert driver.engine.history == history


def test_duplicate_report_is_not_decided_again_when_the_answer_would_change() -> None:
    spec = make_spec(
        scheduler={"name": "median", "resource": "epoch", "maxResource": 5, "minTrials": 1},
        budget={"maxTrials": 3, "parallelTrials": 2},
    )
    driver = Driver(spec)
    driver.decide()
    first = driver.report(1, 1, 10.0)  # no completed trial yet: continue
    assert first.decision is Decision.CONTINUE
    for step in range(1, 6):
        driver.report(0, step, 1.0)
    assert driver.exit(0)
    # Asked fresh, 10 > median 1 at step 1 would stop it; the retry hears what it heard.
    assert driver.engine.report(1, 1, 1, {"loss": 10.0}, now=1.0) == first
    assert driver.report(1, 2, 10.0).decision is Decision.STOP


def test_reports_for_unknown_trials_and_stale_attempts_are_refused() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 2, "parallelTrials": 1}))
    driver.decide()
    engine = driver.engine
    for number in (1, 99, -1):  # trial 1 is not even planned yet
        with pytest.raises(UnknownTrial) as refused:
            engine.report(number, 1, 1, {"loss": 1.0}, now=1.0)
        assert refused.value.status == 404
    for name in ("exp-99", "other-0", "exp-", "exp-x", "exp--1"):
        with pytest.raises(UnknownTrial):
            engine.trial_by_name(name)
    assert engine.trial_by_name("exp-0") is engine.trials[0]

    history = list(engine.history)
    with pytest.raises(StaleAttempt) as stale:
        engine.report(0, 2, 1, {"loss": 1.0}, now=1.0)  # attempt 2 was never launched
    assert stale.value.status == 409
    assert engine.history == history

    # The attempt is interrupted and relaunched: attempt 1's new steps are stale.
    driver.report(0, 1, 3.0)
    assert driver.exit(0, None, ExitKind.INTERRUPTED)
    with pytest.raises(StaleAttempt):
        engine.report(0, 1, 2, {"loss": 1.0}, now=1.0)  # between attempts
    assert launches(driver.decide()) == [(0, 2, True, None)]
    with pytest.raises(StaleAttempt):
        engine.report(0, 1, 2, {"loss": 1.0}, now=1.0)
    assert engine.report(0, 2, 2, {"loss": 1.0}, now=1.0).decision is Decision.CONTINUE
    # Ending an attempt that is not running is a no-op too.
    history = list(engine.history)
    assert not engine.attempt_ended(0, 1, ExitKind.EXITED, 0, now=1.0)
    assert engine.history == history


# ----- non-finite objectives ------------------------------------------------------------


@pytest.mark.parametrize(
    ("goal", "bad"),
    [
        ("minimize", math.nan),
        ("minimize", -math.inf),  # "better" than anything when minimizing
        ("minimize", math.inf),
        ("maximize", math.inf),  # "better" than anything when maximizing
        ("maximize", math.nan),
    ],
)
def test_non_finite_objective_fails_the_trial_and_is_never_best(goal: str, bad: float) -> None:
    driver = Driver(make_spec(goal=goal, budget={"maxTrials": 2, "parallelTrials": 2}))
    driver.decide()
    sign = 1.0 if goal == "minimize" else -1.0
    good = 10.0 * sign  # a mediocre value
    assert driver.report(0, 1, 0.0).decision is Decision.CONTINUE  # finite, excellent
    verdict = driver.report(0, 2, bad)
    assert (verdict.decision, verdict.final) == (Decision.STOP, TrialPhase.FAILED)
    assert "loss" in verdict.reason
    # Told once: another report (finite or not) hears the same.
    assert driver.report(0, 3, 0.0) == verdict
    driver.report(1, 1, good)
    assert driver.exit(0)
    # Trial 1 is still running, so no trial is completed: trial 0's excellent step 1 must
    # not make a failed trial the best.
    best = driver.engine.best()
    assert best is not None and (best.number, best.value) == (1, good)
    assert driver.exit(1)
    driver.decide()
    trials = driver.engine.trials
    assert trials[0].phase is TrialPhase.FAILED
    assert trials[1].phase is TrialPhase.COMPLETED
    best = driver.engine.best()
    assert best is not None and (best.number, best.value) == (1, good)
    assert driver.finished is not None and driver.finished.succeeded


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_non_finite_value_after_a_pause_does_not_poison_the_trial(bad: float) -> None:
    """A trial told to pause that reports once more before exiting: the answer is the
    pause again, and the non-finite value is not its value."""
    driver = Driver(asha(parallelTrials=2))
    driver.decide()
    assert driver.report(0, 1, 2.0).decision is Decision.PAUSE
    assert driver.report(0, 2, bad).decision is Decision.PAUSE
    assert driver.exit(0)
    trial = driver.engine.trials[0]
    assert trial.phase is TrialPhase.PAUSED
    assert (trial.value, trial.last_step, trial.rung_values) == (2.0, 1, {0: 2.0})
    driver.report(1, 1, 3.0)
    best = driver.engine.best()
    assert best is not None and (best.number, best.value) == (0, 2.0)


def test_only_non_finite_results_end_without_a_result() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 1}))
    driver.decide()
    driver.report(0, 1, math.nan)
    assert driver.exit(0)
    driver.decide()
    assert driver.engine.best() is None
    assert driver.finished == FinishExperiment(False, NO_RESULTS, driver.finished.message)


# ----- budgets --------------------------------------------------------------------------


def test_too_many_failed_trials_stops_running_trials_then_fails() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 10, "parallelTrials": 3, "maxFailedTrials": 1}))
    assert [n for n, *_ in launches(driver.decide())] == [0, 1, 2]
    driver.report(2, 1, 1.0)
    assert driver.exit(0, code=1)
    # One failure is allowed: its slot goes to a new trial.
    assert [n for n, *_ in launches(driver.decide())] == [3]
    assert driver.exit(1, code=2)
    actions = driver.decide()
    assert sorted(stops(actions)) == [
        (2, 1, TOO_MANY_FAILED_TRIALS),
        (3, 1, TOO_MANY_FAILED_TRIALS),
    ]
    assert not launches(actions)
    assert not [a for a in actions if isinstance(a, FinishExperiment)]
    # Asked again before they exit: no second stop, still no end.
    assert driver.decide() == []
    # A report meanwhile is told to stop.
    told = driver.report(2, 2, 0.5)
    assert (told.decision, told.final) == (Decision.STOP, TrialPhase.STOPPED)
    assert driver.exit(2, code=0)
    assert driver.decide() == []  # trial 3 still running
    assert driver.exit(3, code=-15)  # SIGTERM is not a failure when we asked for it
    (finish,) = driver.decide()
    assert isinstance(finish, FinishExperiment)
    assert (finish.succeeded, finish.reason) == (False, TOO_MANY_FAILED_TRIALS)
    assert "2 trials failed" in finish.message
    phases = [t.phase for t in driver.engine.trials]
    assert phases == [TrialPhase.FAILED, TrialPhase.FAILED, TrialPhase.STOPPED, TrialPhase.STOPPED]
    assert driver.decide() == []  # ended: nothing more, ever


def test_max_duration_stops_running_trials_then_ends() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 10, "parallelTrials": 2, "maxDuration": "1m"}))
    driver.now = 1000.0
    assert len(launches(driver.decide())) == 2
    driver.report(0, 1, 2.0)
    driver.report(1, 1, 1.0)
    driver.now = 1059.0
    assert driver.decide() == []
    driver.now = 1060.0
    actions = driver.decide()
    assert sorted(stops(actions)) == [(0, 1, MAX_DURATION_REACHED), (1, 1, MAX_DURATION_REACHED)]
    assert all(isinstance(a, StopTrial) for a in actions)
    assert driver.exit(0, code=-15) and driver.exit(1, code=-15)
    (finish,) = driver.decide()
    assert isinstance(finish, FinishExperiment)
    # It ran out of time, which is how it was meant to end; the best so far is the result.
    assert (finish.succeeded, finish.reason) == (True, MAX_DURATION_REACHED)
    assert [t.phase for t in driver.engine.trials] == [TrialPhase.STOPPED] * 2
    best = driver.engine.best()
    assert best is not None and best.number == 1


def test_max_duration_counts_from_the_first_decide_not_from_replays() -> None:
    spec = make_spec(budget={"maxTrials": 1, "maxDuration": "1h"})
    driver = Driver(spec)
    driver.now = 50.0
    driver.decide()
    # A shell restarted 59 minutes later rebuilds the engine: the clock is the history's.
    rebuilt = Driver(
        spec, engine=Engine.replay(spec, "exp", json_round_trip(driver.engine.history))
    )
    for shell in (driver, rebuilt):
        shell.now = 50.0 + 3599
        assert shell.decide() == []
        shell.now = 50.0 + 3600
        assert stops(shell.decide()) == [(0, 1, MAX_DURATION_REACHED)]


def test_parallel_trials_is_never_exceeded() -> None:
    # The driver checks slots after every decide; here also count launches explicitly.
    driver = Driver(make_spec(budget={"maxTrials": 7, "parallelTrials": 3}))
    running: set[int] = set()
    for _ in range(20):
        for number, *_ in launches(driver.decide()):
            running.add(number)
        assert len(running) <= 3
        if driver.finished is not None:
            break
        finished = min(running)
        driver.report(finished, 1, float(finished))
        assert driver.exit(finished)
        running.discard(finished)
    assert driver.finished is not None
    assert driver.finished.reason == MAX_TRIALS_REACHED
    assert len(driver.engine.trials) == 7


# ----- interruptions --------------------------------------------------------------------


def test_interrupted_attempt_is_resumed_and_not_counted_as_failed() -> None:
    driver = Driver(asha(parallelTrials=1, maxFailedTrials=0))
    assert launches(driver.decide()) == [(0, 1, False, 1)]
    driver.report(0, 1, 4.0)
    assert driver.exit(0)  # paused at rung 0
    # Three more trials so that trial 0 (the best of the first three) is promoted to 3.
    for number, loss in ((1, 6.0), (2, 5.0)):
        assert launches(driver.decide()) == [(number, 1, False, 1)]
        driver.report(number, 1, loss)
        assert driver.exit(number)
    assert launches(driver.decide()) == [(0, 2, True, 3)]
    driver.report(0, 2, 3.0)
    # The node goes away: no fault of the trial's.
    assert driver.exit(0, None, ExitKind.INTERRUPTED)
    trial = driver.engine.trials[0]
    assert trial.phase is TrialPhase.PENDING
    assert trial.interruptions == 1
    # Relaunched at once, from its checkpoint, to the same target; no failure counted
    # (maxFailedTrials is 0, so one would end the experiment).
    actions = driver.decide()
    assert launches(actions) == [(0, 3, True, 3)]
    assert driver.engine.counts()[TrialPhase.FAILED.value] == 0
    assert driver.report(0, 3, 2.0).decision is Decision.PAUSE  # the target survived
    assert driver.exit(0, None, ExitKind.INTERRUPTED)  # told to pause, then lost: paused
    assert trial.phase is TrialPhase.PAUSED and trial.interruptions == 1
    assert driver.finished is None


def test_interrupted_during_wind_down_is_stopped_not_relaunched() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 5, "parallelTrials": 2, "maxDuration": "10s"}))
    driver.decide()
    driver.report(0, 1, 1.0)
    driver.now += 10
    assert len(stops(driver.decide())) == 2
    assert driver.exit(0, None, ExitKind.INTERRUPTED)
    assert driver.exit(1, None, ExitKind.INTERRUPTED)
    actions = driver.decide()
    assert not launches(actions)
    assert [type(a) for a in actions] == [FinishExperiment]
    assert [t.phase for t in driver.engine.trials] == [TrialPhase.STOPPED] * 2


def test_pending_and_sampling_trials_are_stopped_when_the_experiment_ends() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 5, "parallelTrials": 2, "maxFailedTrials": 0}))
    driver.decide()
    driver.report(0, 1, 1.0)
    assert driver.exit(1, None, ExitKind.INTERRUPTED)  # pending relaunch
    assert driver.exit(0, code=1)  # the failure that ends it
    actions = driver.engine.decide(driver.now)
    assert [type(a) for a in actions] == [FinishExperiment]
    assert [t.phase for t in driver.engine.trials] == [TrialPhase.FAILED, TrialPhase.STOPPED]
    assert not any(isinstance(a, LaunchTrial) for a in actions)
