"""Population-based training in the engine: decisions, lineage, replay, interruptions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubetune.engine import POPULATION_TRAINED, Engine, LaunchTrial, SampleTrial
from kubetune.events import (
    ExitKind,
    Reported,
    TrialExploited,
    TrialLaunched,
    TrialPlanned,
    from_record,
    to_record,
)
from kubetune.schedulers.pbt import (
    PBT,
    checkpointed_value,
    explore,
    pinned_checkpoints,
    quantile_count,
    schedule,
)
from kubetune.simulate_pbt import make_pbt_spec, simulate_population
from kubetune.spec import CategoricalParameter, ExperimentSpec, FloatParameter, IntParameter
from kubetune.trials import Decision, TrialPhase

LR = [{"name": "lr", "type": "float", "min": 1e-4, "max": 0.5, "scale": "log"}]


class Decay:
    """x <- x (1 - lr) per step, loss x + lr: a decaying rate wins."""

    def init(self, params: dict[str, Any], number: int) -> tuple[float, float]:
        return 1.0, 0.0

    def step(self, state: tuple[float, float], params: dict[str, Any], step: int) -> tuple:
        return state[0] * (1 - params["lr"]), params["lr"]

    def value(self, state: tuple[float, float]) -> float:
        return state[0] + state[1]


def spec(**overrides: Any) -> ExperimentSpec:
    settings: dict[str, Any] = {"population": 6, "interval": 4, "max_resource": 24, "seed": 1}
    settings |= overrides
    return make_pbt_spec(LR, **settings)


def test_bottom_members_are_replaced_from_top_checkpoints_at_the_exact_step() -> None:
    result = simulate_population(spec(), Decay())
    engine = result.engine
    assert result.finished is not None and result.finished.reason == POPULATION_TRAINED
    exploited = [e for e in engine.history if isinstance(e, TrialExploited)]
    assert exploited, "a population of 6 with quantile 0.25 replaces its last member"
    for event in exploited:
        child, parent = engine.trials[event.number], engine.trials[event.parent]
        assert (child.parent, child.from_step, child.replaces) == (
            event.parent,
            event.from_step,
            event.replaces,
        )
        assert engine.trials[event.replaces].replaced_by == event.number
        assert engine.trials[event.replaces].phase is TrialPhase.STOPPED
        # The parent reported (so checkpointed) at exactly that step, and the child
        # started from that very checkpoint (its state's lineage says so).
        assert event.from_step in parent.values and event.from_step % 4 == 0
        assert (event.number, event.parent, event.from_step) in result.loads
    # Every completed member trained to maxResource, its lineage carrying it there.
    completed = [t for t in engine.trials if t.phase is TrialPhase.COMPLETED]
    assert len(completed) == 6
    assert all(t.last_step == 24 for t in completed)


def test_the_replacement_is_history_before_it_is_launched() -> None:
    engine = Engine(spec(population=2, interval=2, max_resource=8), "exp")
    actions = _start(engine, 0.0)
    assert [a.number for a in actions] == [0, 1]
    # Member 1 is worse at step 2: it is replaced (quantile 0.25 of 2 is one member).
    assert engine.report(0, 1, 1, {"loss": 0.5}, 1.0).decision is Decision.CONTINUE
    assert engine.report(0, 1, 2, {"loss": 0.4}, 2.0).decision is Decision.CONTINUE
    assert engine.report(1, 1, 1, {"loss": 0.9}, 2.0).decision is Decision.CONTINUE
    verdict = engine.report(1, 1, 2, {"loss": 0.8}, 3.0)
    assert verdict.decision is Decision.STOP and "exploited" in verdict.reason
    kinds = [type(e) for e in engine.history[-3:]]
    assert kinds == [Reported, TrialPlanned, TrialExploited]
    new = engine.trials[2]
    assert (new.parent, new.from_step, new.replaces) == (0, 2, 1)
    # The member it replaces is still running: no second pod for its slot yet.
    assert engine.decide(3.0) == []
    assert not any(isinstance(e, TrialLaunched) and e.number == 2 for e in engine.history)
    engine.attempt_ended(1, 1, ExitKind.EXITED, 0, 4.0)
    launches = [a for a in engine.decide(4.0) if isinstance(a, LaunchTrial)]
    assert launches == [
        LaunchTrial(2, "exp-2", 1, new.params, False, 8, parent="exp-0", from_step=2)
    ]
    # Replayed, the engine is where it was and decides the same (nothing new).
    replayed = Engine.replay(engine.spec, "exp", engine.history)
    assert [(t.phase, t.params, t.parent, t.from_step) for t in replayed.trials] == [
        (t.phase, t.params, t.parent, t.from_step) for t in engine.trials
    ]
    assert replayed.decide(5.0) == []


def test_same_seed_same_decisions_and_replay_is_identical() -> None:
    first = simulate_population(spec(), Decay()).engine
    second = simulate_population(spec(), Decay()).engine
    assert [to_record(e) for e in first.history] == [to_record(e) for e in second.history]
    replayed = Engine.replay(first.spec, "sim", [from_record(to_record(e)) for e in first.history])
    assert [(t.phase, t.params, t.parent, t.from_step, t.values) for t in replayed.trials] == [
        (t.phase, t.params, t.parent, t.from_step, t.values) for t in first.trials
    ]
    other = simulate_population(spec(seed=2), Decay()).engine
    assert [to_record(e) for e in other.history] != [to_record(e) for e in first.history]


def test_a_slow_member_blocks_no_one() -> None:
    # Member 0 takes 50 times longer per step: the others are ranked and replaced at their
    # own intervals, against what member 0 reported so far (nothing, at first).
    result = simulate_population(
        spec(), Decay(), step_duration=lambda number, step: 50.0 if number == 0 else 1.0
    )
    engine = result.engine
    first_exploit = next(i for i, e in enumerate(engine.history) if isinstance(e, TrialExploited))
    slow_reports = [
        e for e in engine.history[:first_exploit] if isinstance(e, Reported) and e.number == 0
    ]
    assert len(slow_reports) < 4, "decided before the slow member reached its first interval"
    assert result.finished is not None


def test_winners_keep_running_only_replacements_cost_a_start() -> None:
    result = simulate_population(spec(), Decay())
    engine = result.engine
    exploits = sum(isinstance(e, TrialExploited) for e in engine.history)
    assert result.launches == 6 + exploits
    for trial in engine.trials:
        assert len(trial.attempts) == 1, f"{trial.name} restarted"


def test_an_interrupted_member_resumes_its_own_checkpoint_with_its_own_params() -> None:
    calm = simulate_population(spec(), Decay()).engine
    # A member of the first generation that was never replaced: its node is lost at 7.
    number = next(t.number for t in calm.trials if t.parent is None and t.replaced_by is None)
    lost = {(number, 7)}  # once: the resumed attempt trains step 7 again

    def interrupt(n: int, step: int) -> bool:
        if (n, step) in lost:
            lost.discard((n, step))
            return True
        return False

    result = simulate_population(spec(), Decay(), interrupt=interrupt)
    engine = result.engine
    trial = engine.trials[number]
    assert trial.interruptions == 1 and trial.phase is not TrialPhase.FAILED
    assert len(trial.attempts) == 2 and trial.attempts[1].resume
    assert trial.params == calm.trials[number].params
    # Its own checkpoint at step 4 (not a donor's), and it goes on from step 5.
    assert (number, number, 4) in result.loads
    assert trial.attempts[1].first_step == 5
    # Not a new member: the population still ends with six completed trials.
    assert sum(t.phase is TrialPhase.COMPLETED for t in engine.trials) == 6


def test_pinned_checkpoints_are_those_of_members_not_ended() -> None:
    engine = Engine(spec(population=2, interval=2, max_resource=8), "exp")
    _start(engine, 0.0)
    engine.report(0, 1, 2, {"loss": 0.1}, 1.0)
    engine.report(1, 1, 2, {"loss": 0.9}, 1.0)
    assert pinned_checkpoints(engine.trials) == {(0, 2)}
    engine.attempt_ended(1, 1, ExitKind.EXITED, 0, 2.0)
    engine.decide(2.0)
    # Interrupted before its first checkpoint: it still needs its parent's.
    engine.attempt_ended(2, 1, ExitKind.INTERRUPTED, None, 3.0)
    assert pinned_checkpoints(engine.trials) == {(0, 2)}
    launch = next(a for a in engine.decide(3.0) if isinstance(a, LaunchTrial))
    assert (launch.number, launch.resume, launch.parent, launch.from_step) == (
        2,
        True,
        "exp-0",
        2,
    )


def test_best_names_the_final_trial_and_its_whole_schedule() -> None:
    engine = simulate_population(spec(), Decay()).engine
    best = engine.best()
    assert best is not None
    entries = schedule(engine.trials, best.number)
    assert entries[-1].trial == best.number and entries[0].from_step == 0
    assert [e.from_step for e in entries] == sorted(e.from_step for e in entries)
    assert engine.trials[entries[0].trial].parent is None


def test_quantiles_follow_ray_tune() -> None:
    assert [quantile_count(n, 0.25) for n in (1, 2, 3, 4, 8, 9)] == [0, 1, 1, 1, 2, 3]
    assert quantile_count(5, 0.5) == 2


def test_ranking_uses_each_members_latest_checkpointed_value() -> None:
    engine = Engine(spec(population=2, interval=2, max_resource=8), "exp")
    _start(engine, 0.0)
    for step, loss in ((1, 0.1), (2, 0.5), (3, 0.01)):
        engine.report(0, 1, step, {"loss": loss}, 1.0)
    # Step 3 is not a checkpoint: member 0 counts with its value at 2.
    assert checkpointed_value(engine.trials[0], 4, 2) == (2, 0.5)
    assert checkpointed_value(engine.trials[0], 1, 2) is None


def test_explore_perturbs_clamps_keeps_scale_and_grid() -> None:
    lr = FloatParameter(name="lr", type="float", min=1e-4, max=0.1, scale="log")
    width = IntParameter(name="width", type="int", min=8, max=64, step=8)
    act = CategoricalParameter(name="act", type="categorical", values=["relu", "tanh", "gelu"])
    params = {"lr": 0.09, "width": 16, "act": "relu"}
    seen: set[tuple] = set()
    for seed in range(200):
        out = explore(params, [lr, width, act], random.Random(seed), [0.8, 1.2], 0.0)
        assert out["lr"] in (pytest.approx(0.072), 0.1)  # 0.108 clamped to max
        assert out["width"] in (8, 24)  # 12.8 and 19.2 snapped to the grid, moved a step
        assert out["act"] == "tanh"  # the only neighbour of the first value
        seen.add((out["lr"], out["width"]))
    assert len(seen) == 4
    drawn = [
        explore(params, [lr, width, act], random.Random(s), [0.8, 1.2], 1.0) for s in range(200)
    ]
    assert all(1e-4 <= d["lr"] <= 0.1 and d["width"] % 8 == 0 for d in drawn)
    assert {d["act"] for d in drawn} == {"relu", "tanh", "gelu"}
    # Drawn on the log scale: about half below the geometric middle (0.00316).
    below = sum(d["lr"] < 10**-2.5 for d in drawn) / len(drawn)
    assert 0.35 < below < 0.65


def test_checkpoint_reports_survive_compaction() -> None:
    policy = simulate_population(spec(), Decay()).engine.scheduler
    assert isinstance(policy, PBT)
    assert policy.must_keep(8) and not policy.must_keep(7)


def test_exploits_stop_at_max_trials() -> None:
    result = simulate_population(spec(max_trials=7), Decay())
    assert len(result.engine.trials) == 7
    assert result.finished is not None and result.finished.reason == POPULATION_TRAINED


def _start(engine: Engine, now: float) -> list[LaunchTrial]:
    """Decide until every planned trial is sampled and launched."""
    from kubetune import samplers

    launched: list[LaunchTrial] = []
    while True:
        actions = engine.decide(now)
        launched += [a for a in actions if isinstance(a, LaunchTrial)]
        samples = [a for a in actions if isinstance(a, SampleTrial)]
        if not samples:
            return launched
        for action in samples:
            engine.record_suggestion(
                action.number, samplers.suggest(*engine.sampler_request(action.number))
            )


def test_compaction_keeps_every_report_a_pbt_decision_reads() -> None:
    from kubetune.events import to_record as record
    from kubetune.operator.store import compact

    engine = simulate_population(spec(max_resource=400, population=2, seed=5), Decay()).engine
    policy = engine.scheduler
    longest = max(engine.trials, key=lambda t: len(t.values)).number
    reports = [record(e) for e in engine.history if isinstance(e, Reported) and e.number == longest]
    kept = compact(reports, policy.must_keep, limit=len(reports) // 5)
    steps = {r["step"] for r in kept}
    assert len(kept) < len(reports)
    assert {r["step"] for r in reports if r["step"] % 4 == 0} <= steps
