"""The virtual-clock simulator: it carries out the engine's actions faithfully and fast."""

from __future__ import annotations

import pytest

from kubetune.engine import MAX_DURATION_REACHED, MAX_TRIALS_REACHED, SEARCH_SPACE_EXHAUSTED
from kubetune.samplers import Suggestion
from kubetune.schedulers import rung_resources
from kubetune.simulate import make_spec, simulate
from kubetune.trials import TrialPhase

X = [{"name": "x", "type": "float", "min": -5.0, "max": 5.0}]


def quadratic(params, step):
    return (params["x"] - 1.0) ** 2


def learning_curve(params, step):
    """Improves with steps; the ranking of configurations is the same at every step."""
    return (params["x"] - 1.0) ** 2 + 2.0 / step


def asha_spec(max_trials=40, parallel=4, seed=3, **budget):
    return make_spec(
        X,
        algorithm={"name": "random", "seed": seed},
        scheduler={
            "name": "asha",
            "resource": "epoch",
            "minResource": 1,
            "maxResource": 27,
            "reductionFactor": 3,
        },
        budget={"maxTrials": max_trials, "parallelTrials": parallel, **budget},
    )


def test_random_search_runs_every_trial_to_the_end():
    spec = make_spec(
        X, algorithm={"name": "random", "seed": 1}, budget={"maxTrials": 8, "parallelTrials": 2}
    )
    result = simulate(spec, quadratic, max_steps=3)

    engine = result.engine
    assert len(engine.trials) == 8
    assert all(t.phase is TrialPhase.COMPLETED for t in engine.trials)
    assert result.resource == 8 * 3 == sum(t.resource for t in engine.trials)
    assert result.makespan == pytest.approx(8 * 3 / 2)  # two at a time, one second a step
    assert result.finished is not None and result.finished.reason == MAX_TRIALS_REACHED
    assert result.full_fidelity_evaluations == 8
    bests = [p.best for p in result.trajectory]
    assert bests == sorted(bests, reverse=True)  # best so far only improves
    assert [p.resource for p in result.trajectory] == sorted(p.resource for p in result.trajectory)
    assert result.best_value == engine.best().value
    values = [quadratic(t.params, 3) for t in engine.trials]
    assert result.best_value == min(values)


def test_parallel_trials_overlap_in_virtual_time():
    spec = make_spec(
        X, algorithm={"name": "random", "seed": 2}, budget={"maxTrials": 4, "parallelTrials": 4}
    )
    result = simulate(spec, quadratic, max_steps=5, step_duration=2.0)
    assert result.makespan == pytest.approx(10.0)
    assert {t.attempts[0].started_at for t in result.engine.trials} == {0.0}


def test_step_duration_may_depend_on_params():
    spec = make_spec(
        X, algorithm={"name": "random", "seed": 4}, budget={"maxTrials": 5, "parallelTrials": 1}
    )
    result = simulate(spec, quadratic, max_steps=2, step_duration=lambda p: 1.0 + abs(p["x"]))
    expected = sum(2 * (1.0 + abs(t.params["x"])) for t in result.engine.trials)
    assert result.makespan == pytest.approx(expected)


def test_asha_resumes_promoted_trials_from_their_rung():
    result = simulate(asha_spec(), learning_curve)
    engine = result.engine
    rungs = rung_resources(1, 27, 3)
    resumed = [t for t in engine.trials if len(t.attempts) > 1]
    assert resumed, "some trial must have been promoted"
    for trial in engine.trials:
        first = trial.attempts[0]
        assert first.first_step == 1 and not first.resume
        for previous, attempt in zip(trial.attempts, trial.attempts[1:], strict=False):
            assert attempt.resume
            assert previous.last_step in rungs  # it paused at a rung ...
            assert attempt.first_step == previous.last_step + 1  # ... and went on from there
    # Nothing was trained twice: the resource is the furthest step of each trial.
    assert result.resource == sum(max(t.values) for t in engine.trials)
    assert result.resource == sum(t.resource for t in engine.trials)
    # Full fidelity only at maxResource, and only by completed trials.
    completed = [t for t in engine.trials if t.phase is TrialPhase.COMPLETED]
    assert completed and all(max(t.values) == 27 for t in completed)
    assert result.full_fidelity_evaluations == len(completed)


def test_the_same_inputs_give_the_same_history():
    first = simulate(asha_spec(max_trials=20, seed=7), learning_curve)
    second = simulate(asha_spec(max_trials=20, seed=7), learning_curve)
    assert first.engine.history == second.engine.history
    assert first.trajectory == second.trajectory


def test_resource_budget_cuts_the_run():
    result = simulate(asha_spec(max_trials=1000), learning_curve, resource_budget=50)
    assert result.resource == 50
    assert result.finished is None
    assert sum(t.resource for t in result.engine.trials) == 50


def test_max_duration_stops_running_trials():
    spec = make_spec(
        X,
        algorithm={"name": "random", "seed": 5},
        budget={"maxTrials": 10, "parallelTrials": 2, "maxDuration": "5s"},
    )
    result = simulate(spec, quadratic, max_steps=10)
    assert result.finished is not None and result.finished.reason == MAX_DURATION_REACHED
    assert result.makespan == pytest.approx(5.0)
    assert result.resource <= 10
    assert all(t.phase is TrialPhase.STOPPED for t in result.engine.trials)


def test_maximize_tracks_the_largest_value():
    spec = make_spec(
        X,
        goal="maximize",
        algorithm={"name": "random", "seed": 6},
        budget={"maxTrials": 6, "parallelTrials": 3},
    )
    result = simulate(spec, quadratic, max_steps=1)
    assert result.best_value == max(quadratic(t.params, 1) for t in result.engine.trials)
    first = next(p for p in result.trajectory if p.best == result.best_value)
    assert result.resource_to_reach(result.best_value) == first.resource
    assert result.resource_to_reach(result.best_value + 1.0) is None


def test_trials_need_an_end():
    spec = make_spec(X, budget={"maxTrials": 2})
    with pytest.raises(ValueError, match="max_steps"):
        simulate(spec, quadratic)
    with pytest.raises(ValueError, match="differs"):
        simulate(asha_spec(), quadratic, max_steps=5)


def test_a_substituted_suggest_is_used_and_exhaustion_ends_the_run():
    points = [-1.0, 0.5, 2.0]

    def suggest(spec, trials, study_attrs, number):
        if number >= len(points):
            return None
        return Suggestion(params={"x": points[number]}, system_attrs={}, study_attrs={})

    spec = make_spec(X, budget={"maxTrials": 10, "parallelTrials": 2})
    result = simulate(spec, quadratic, max_steps=2, suggest=suggest)
    assert [t.params["x"] for t in result.engine.trials] == points
    assert result.finished is not None and result.finished.reason == SEARCH_SPACE_EXHAUSTED
    assert result.best_value == 0.25


def test_trials_ending_together_are_replaced_in_one_batch_when_asked():
    """`together`: the sampler sees every trial that ended at an instant before it suggests
    their successors; without it, each successor is suggested while the others that ended
    at the same instant still look running."""
    # TPE: random search is handed no history (it reads none, samplers.reads_history).
    spec = make_spec(
        X, algorithm={"name": "tpe", "seed": 5}, budget={"maxTrials": 8, "parallelTrials": 4}
    )
    seen: dict[bool, list[int]] = {True: [], False: []}

    def counting(together: bool):
        from kubetune.samplers import SamplerState, suggest

        def wrapped(spec, trials, attrs, number):
            if number >= 4:
                seen[together].append(sum(t.state is SamplerState.COMPLETE for t in trials))
            return suggest(spec, trials, attrs, number)

        return wrapped

    for together in (False, True):
        result = simulate(spec, quadratic, max_steps=1, suggest=counting(together),
                          together=together)  # fmt: skip
        assert len(result.engine.trials) == 8
        assert result.makespan == pytest.approx(2.0)  # same clock either way
    assert seen[False] == [1, 2, 3, 4]  # one ended trial visible per suggestion
    assert seen[True] == [4, 4, 4, 4]  # all four visible to the whole batch
