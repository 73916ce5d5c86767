"""kubetune.warmstart's mapping rules: earlier trials onto this experiment's space."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune.events import PriorTrial, to_record
from kubetune.simulate import make_spec
from kubetune.spec import ExperimentSpec, Goal, Objective
from kubetune.warmstart import (
    BEYOND_BOUND,
    MAX_PRIOR_BYTES,
    MAX_PRIOR_TRIALS,
    ParentExperiment,
    WarmStartError,
    map_params,
    warm_start,
)

SPACE: list[dict[str, Any]] = [
    {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "scale": "log"},
    {"name": "layers", "type": "int", "min": 1, "max": 8, "step": 1},
    {"name": "width", "type": "int", "min": 16, "max": 256, "step": 16},
    {"name": "dropout", "type": "float", "min": 0.0, "max": 0.5, "step": 0.1},
    {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 1.0, "when": {"optimizer": "sgd"}},
]
GOOD: dict[str, Any] = {
    "lr": 0.01,
    "layers": 3,
    "width": 64,
    "dropout": 0.2,
    "optimizer": "sgd",
    "momentum": 0.9,
}


def spec(mode: str = "transfer", goal: str = "minimize", space: Any = None) -> ExperimentSpec:
    base = make_spec(space or SPACE, goal=goal, budget={"maxTrials": 10}, name="child")
    warm = {"experiments": ["parent"], "mode": mode}
    return ExperimentSpec.model_validate({**base.model_dump(mode="json"), "warmStart": warm})


def parent(*params: dict[str, Any], goal: Goal = Goal.MINIMIZE) -> ParentExperiment:
    trials = [PriorTrial("parent", f"parent-{i}", p, float(i)) for i, p in enumerate(params)]
    return ParentExperiment("parent", Objective(metric="loss", goal=goal), trials)


def test_a_trial_inside_the_space_maps_whole() -> None:
    assert map_params(spec().parameters, GOOD) == GOOD


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lr": 0.5}, "lr: outside [0.0001, 0.1]"),  # outside the new range: not clamped
        ({"layers": 9}, "layers: outside [1, 8] or off its grid"),
        ({"layers": 2.5}, "layers: outside [1, 8] or off its grid"),  # not an integer
        ({"width": 40}, "width: outside [16, 256] or off its grid"),  # off the step grid
        ({"dropout": 0.25}, "dropout: outside [0, 0.5] or off its grid"),
        ({"optimizer": "rmsprop"}, "optimizer: a choice no longer listed"),
        ({"lr": "0.01"}, "lr: outside [0.0001, 0.1]"),  # a string is not a number
        ({"lr": True}, "lr: outside [0.0001, 0.1]"),  # nor is a boolean
        # A hand-edited state: numbers no float holds, NaN and infinity
        ({"lr": 10**400}, "lr: outside [0.0001, 0.1]"),
        ({"layers": 10**400}, "layers: outside [1, 8] or off its grid"),
        ({"layers": -(10**400)}, "layers: outside [1, 8] or off its grid"),
        ({"lr": float("nan")}, "lr: outside [0.0001, 0.1]"),
        ({"layers": float("inf")}, "layers: outside [1, 8] or off its grid"),
    ],
)
def test_values_that_do_not_fit_leave_the_trial_out(change: dict[str, Any], reason: str) -> None:
    assert map_params(spec().parameters, {**GOOD, **change}) == reason


def test_a_missing_active_parameter_leaves_the_trial_out() -> None:
    params = {k: v for k, v in GOOD.items() if k != "width"}
    assert map_params(spec().parameters, params) == "missing parameter width"
    # momentum is active only with sgd: missing with adam is fine, and dropped if given.
    adam = {k: v for k, v in GOOD.items() if k != "momentum"} | {"optimizer": "adam"}
    assert map_params(spec().parameters, adam) == adam
    assert map_params(spec().parameters, {**adam, "momentum": 0.5}) == adam
    sgd = {k: v for k, v in GOOD.items() if k != "momentum"}
    assert map_params(spec().parameters, sgd) == "missing parameter momentum"


def test_parameters_that_no_longer_exist_are_dropped_and_types_follow_the_new_space() -> None:
    mapped = map_params(spec().parameters, {**GOOD, "old": 7, "layers": 3.0, "dropout": 0})
    assert mapped == {**GOOD, "layers": 3, "dropout": 0.0}
    assert isinstance(mapped, dict) and type(mapped["layers"]) is int
    assert type(mapped["dropout"]) is float


def test_categorical_choices_keep_their_type() -> None:
    space = [{"name": "c", "type": "categorical", "values": [1, "2", True]}]
    parameters = spec(space=space).parameters
    assert map_params(parameters, {"c": "2"}) == {"c": "2"}
    assert map_params(parameters, {"c": 2}) == "c: a choice no longer listed"
    assert map_params(parameters, {"c": "1"}) == "c: a choice no longer listed"


def test_warm_start_counts_what_it_leaves_out_by_reason() -> None:
    event = warm_start(
        spec("reuse"),
        [parent(GOOD, {**GOOD, "lr": 0.5}, {**GOOD, "lr": 0.9}, {"lr": 0.01}, {**GOOD, "x": 1})],
        now=5.0,
    )
    assert (event.warm_mode, event.parents, event.at) == ("reuse", ["parent"], 5.0)
    assert [t.trial for t in event.prior_trials] == ["parent-0", "parent-4"]
    assert event.prior_trials[1].params == GOOD and event.prior_trials[1].value == 4.0
    assert event.left_out == {"lr: outside [0.0001, 0.1]": 2, "missing parameter layers": 1}


def test_non_finite_values_are_not_candidates() -> None:
    nan = ParentExperiment(
        "parent",
        Objective(metric="loss", goal=Goal.MINIMIZE),
        [PriorTrial("parent", "parent-0", GOOD, float("nan"))],
    )
    event = warm_start(spec(), [nan], now=0.0)
    assert event.prior_trials == () and event.left_out == {}


@pytest.mark.parametrize(
    ("objective", "text"),
    [
        (Objective(metric="loss", goal=Goal.MAXIMIZE), "optimizes loss (maximize)"),
        (Objective(metric="accuracy", goal=Goal.MINIMIZE), "optimizes accuracy (minimize)"),
    ],
)
def test_another_objective_is_an_error_naming_the_field(objective: Objective, text: str) -> None:
    other = ParentExperiment("parent", objective, [PriorTrial("parent", "parent-0", GOOD, 1.0)])
    with pytest.raises(WarmStartError) as raised:
        warm_start(spec(), [other], now=0.0)
    assert raised.value.path == "spec.warmStart.experiments[0]"
    assert text in str(raised.value) and "\n" not in str(raised.value)


def test_the_best_trials_are_kept_within_the_bound() -> None:
    total = MAX_PRIOR_TRIALS + 300
    many = [PriorTrial("parent", f"parent-{i}", GOOD, float(-i)) for i in range(total)]
    event = warm_start(spec(), [ParentExperiment("parent", spec().objective, many)], now=0.0)
    assert len(event.prior_trials) == MAX_PRIOR_TRIALS
    assert event.left_out == {BEYOND_BOUND: 300}
    # minimizing: the lowest values (the last trials here) stay, in their own order
    assert event.prior_trials[0].trial == "parent-300"
    assert event.prior_trials[-1].trial == f"parent-{total - 1}"


def test_long_parameter_values_are_bounded_in_bytes() -> None:
    space = [{"name": "c", "type": "categorical", "values": ["a" * 2000, "b" * 2000]}]
    trials = [PriorTrial("parent", f"parent-{i}", {"c": "a" * 2000}, float(i)) for i in range(100)]
    child = spec(space=space)
    event = warm_start(child, [ParentExperiment("parent", child.objective, trials)], now=0.0)
    kept = len(event.prior_trials)
    assert 0 < kept < 100 and event.left_out == {BEYOND_BOUND: 100 - kept}
    assert len(json.dumps(to_record(event))) <= MAX_PRIOR_BYTES
