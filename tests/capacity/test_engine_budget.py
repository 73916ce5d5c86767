"""budget.maxCostUSD in the engine: cost arrives as CostObserved events, decisions are pure.

Every number below is worked by hand: trials cost `trial_usd_per_hour` = $3600/h, that is
$1 per trial-second, so seconds and dollars read the same.
"""

from __future__ import annotations

from kubetune.engine import BUDGET_EXHAUSTED, Engine, FinishExperiment
from kubetune.events import CostObserved
from kubetune.trials import TrialPhase
from tests.engine.helpers import Driver, json_round_trip, launches, make_spec, stops

RATE = 3600.0  # USD per trial-hour: $1 per trial-second
ASHA = {"name": "asha", "resource": "step", "minResource": 1, "maxResource": 9}


def test_no_new_trial_when_its_projected_cost_would_pass_the_budget() -> None:
    spec = make_spec(budget={"maxTrials": 10, "parallelTrials": 2, "maxCostUSD": 10.0})
    d = Driver(spec, now=1000.0)
    assert launches(d.decide()) == [(0, 1, False, None), (1, 1, False, None)]
    # Trial 0 ran 4 s and ends; trial 1 has run 4 s: $8 spent.
    d.now = 1004.0
    d.report(0, 1, 0.5)
    d.exit(0)
    assert d.engine.observe_cost(8.0, RATE, d.now)
    # An attempt takes 4 s ($4) on average: committed = $8 + trial 1's remaining
    # max(4 - 4, 0) s = $8; a new trial would make it $12 > $10: refused.
    assert launches(d.decide()) == [] and d.finished is None
    d.now = 1005.0
    d.report(1, 1, 0.4)
    d.exit(1)
    d.engine.observe_cost(9.0, RATE, d.now)
    d.decide()
    assert d.finished == FinishExperiment(
        True,
        BUDGET_EXHAUSTED,
        "the next trial or promotion would take the cost ($9.00 so far) past maxCostUSD ($10.00)",
    )
    assert len(d.engine.trials) == 2


def test_a_trial_that_fits_starts() -> None:
    spec = make_spec(budget={"maxTrials": 10, "parallelTrials": 1, "maxCostUSD": 10.0})
    d = Driver(spec, now=0.0)
    d.decide()
    d.now = 3.0
    d.report(0, 1, 0.5)
    d.exit(0)
    d.engine.observe_cost(3.0, RATE, d.now)
    # $3 + one 3 s attempt ($3) = $6 <= $10.
    assert launches(d.decide()) == [(1, 1, False, None)]


def test_reaching_the_budget_stops_running_trials_and_ends_the_experiment() -> None:
    spec = make_spec(budget={"maxTrials": 10, "parallelTrials": 2, "maxCostUSD": 5.0})
    d = Driver(spec, now=0.0)
    d.decide()
    d.now = 2.5
    d.engine.observe_cost(5.0, RATE, d.now)
    actions = d.decide()
    assert stops(actions) == [(0, 1, BUDGET_EXHAUSTED), (1, 1, BUDGET_EXHAUSTED)]
    d.report(0, 1, 0.3)
    d.exit(0)
    d.exit(1)
    d.decide()
    assert d.finished is not None and d.finished.reason == BUDGET_EXHAUSTED
    assert d.finished.message == "cost $5.00 reached maxCostUSD ($5.00)"
    assert d.finished.succeeded  # a budget ending is a normal ending: the best trial stands


def asha_with_three_paused(limit: float) -> Driver:
    spec = make_spec(
        scheduler=ASHA, budget={"maxTrials": 3, "parallelTrials": 1, "maxCostUSD": limit}
    )
    d = Driver(spec, now=0.0)
    d.decide()
    for number, loss in [(0, 0.5), (1, 0.2), (2, 0.9)]:
        d.now += 1.0  # each attempt: 1 s for 1 step, so 1 s per step
        d.report(number, 1, loss)
        d.exit(number)
        d.engine.observe_cost(float(number + 1), RATE, d.now)
        if number < 2:
            d.decide()
    return d


def test_a_promotion_is_projected_by_seconds_per_step() -> None:
    # Promoting trial 1 from step 1 to rung 3 trains 2 steps: 2 s, $2. Spent: $3.
    d = asha_with_three_paused(limit=5.5)
    assert launches(d.decide()) == [(1, 2, True, 3)]
    d = asha_with_three_paused(limit=4.5)
    assert launches(d.decide()) == []
    assert d.finished is not None and d.finished.reason == BUDGET_EXHAUSTED
    assert d.engine.counts()["Stopped"] == 3  # paused trials end as not promoted


def test_cost_is_recorded_only_when_a_decision_could_change() -> None:
    spec = make_spec(budget={"maxTrials": 4, "maxCostUSD": 100.0})
    engine = Engine(spec, "exp")
    engine.decide(0.0)
    assert engine.observe_cost(0.1, RATE, 1.0)  # the first one
    assert not engine.observe_cost(0.9, RATE, 2.0)  # grew by $0.8 < 1% of $100
    assert engine.observe_cost(1.1, RATE, 3.0)  # grew by $1.0
    assert engine.observe_cost(1.2, RATE * 1.2, 4.0)  # a trial-hour costs 20% more
    assert not engine.observe_cost(1.3, RATE * 1.25, 5.0)
    assert engine.observe_cost(100.0, RATE * 1.2, 6.0)  # crossed the budget
    recorded = [e for e in engine.history if isinstance(e, CostObserved)]
    assert [e.usd for e in recorded] == [0.1, 1.1, 1.2, 100.0]
    unbudgeted = Engine(make_spec(budget={"maxTrials": 4}), "exp")
    unbudgeted.decide(0.0)
    assert not unbudgeted.observe_cost(50.0, RATE, 1.0)


def test_replay_rebuilds_the_cost_and_decides_the_same() -> None:
    spec = make_spec(budget={"maxTrials": 10, "parallelTrials": 2, "maxCostUSD": 10.0})
    d = Driver(spec, now=1000.0)
    d.decide()
    d.now = 1004.0
    d.report(0, 1, 0.5)
    d.exit(0)
    d.engine.observe_cost(8.0, RATE, d.now)
    history = json_round_trip(d.engine.history)
    replayed = Engine.replay(spec, "exp", history)
    assert (replayed.cost_usd, replayed.trial_usd_per_hour) == (8.0, RATE)
    assert replayed.decide(d.now) == d.engine.decide(d.now) == []


def test_raising_the_cost_budget_reopens_an_exhausted_experiment() -> None:
    spec = make_spec(budget={"maxTrials": 10, "parallelTrials": 1, "maxCostUSD": 5.0})
    d = Driver(spec, now=0.0)
    d.decide()
    d.now = 4.0
    d.report(0, 1, 0.5)
    d.exit(0)
    d.engine.observe_cost(4.0, RATE, d.now)
    d.decide()  # $4 + $4 > $5
    assert d.engine.ended is not None and d.engine.ended.reason == BUDGET_EXHAUSTED
    assert not d.engine.reopen(d.now)
    d.engine.update_spec(
        make_spec(budget={"maxTrials": 10, "parallelTrials": 1, "maxCostUSD": 20.0})
    )
    assert d.engine.reopen(d.now)
    d.finished = None
    assert launches(d.decide()) == [(1, 1, False, None)]
    assert d.engine.trials[0].phase is TrialPhase.COMPLETED
