"""spec.warmStart in the spec, the history and the engine: transfer and reuse."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubetune import samplers
from kubetune.engine import TARGET_REACHED, Engine, SampleTrial
from kubetune.events import PriorTrial, WarmStarted, from_record, to_record
from kubetune.samplers import SamplerState
from kubetune.spec import SpecError, parse_experiment
from kubetune.warmstart import ParentExperiment, warm_start

H2 = [
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "y", "type": "float", "min": 0.0, "max": 1.0},
]


def document(warm: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": H2,
        "algorithm": {"name": "tpe", "seed": 1},
        "budget": {"maxTrials": 4, "parallelTrials": 2},
        "trialTemplate": {"spec": {"containers": [{"name": "t", "command": ["run"]}]}},
        **spec,
    }
    if warm is not None:
        body["warmStart"] = warm
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": "child"},
        "spec": body,
    }


@pytest.mark.parametrize(
    ("warm", "path", "text"),
    [
        ({"experiments": ["a"], "mode": "warm"}, "spec.warmStart.mode", "'transfer' or 'reuse'"),
        ({"experiments": []}, "spec.warmStart.experiments", "at least 1 item"),
        ({"experiments": ["a", "child"]}, "spec.warmStart.experiments[1]", "this experiment"),
        ({"experiments": ["a", "b", "a"]}, "spec.warmStart.experiments[2]", "named twice"),
        ({"experiments": list("abcdef")}, "spec.warmStart.experiments", "at most 5 items"),
        ({"experiments": ["Not_A_Name"]}, "spec.warmStart.experiments[0]", "pattern"),
        ({"mode": "reuse"}, "spec.warmStart.experiments", "Field required"),
        ({"experiments": ["a"], "modes": "x"}, "spec.warmStart.modes", "unknown field"),
    ],
)
def test_bad_warm_start_is_refused_naming_the_field(
    warm: dict[str, Any], path: str, text: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_experiment(document(warm))
    assert [p for p, _ in raised.value.problems] == [path], raised.value.problems
    assert text in raised.value.problems[0][1]


def test_the_default_mode_is_transfer() -> None:
    spec = parse_experiment(document({"experiments": ["a", "b"]})).spec
    assert spec.warmStart is not None and spec.warmStart.mode.value == "transfer"


def priors(values: list[float]) -> WarmStarted:
    trials = [
        PriorTrial("parent", f"parent-{i}", {"x": i / 10, "y": 0.5}, v)
        for i, v in enumerate(values)
    ]
    return WarmStarted("transfer", ["parent"], 1.0, tuple(trials), {"x: outside [0, 1]": 2})


def engine(mode: str, values: list[float], **spec: Any) -> Engine:
    parsed = parse_experiment(document({"experiments": ["parent"], "mode": mode}, **spec)).spec
    made = Engine(parsed, "child")
    assert made.needs_warm_start()
    event = priors(values)
    made.record_warm_start(WarmStarted(mode, event.parents, 1.0, event.prior_trials, {}))
    assert not made.needs_warm_start()
    return made


def test_the_record_round_trips_through_json() -> None:
    event = priors([0.5, 0.25])
    record = json.loads(json.dumps(to_record(event)))
    assert record["type"] == "WarmStarted" and record["v"] == 1
    assert from_record(record) == event
    del record["left_out"], record["prior_trials"]  # pruned empties read as empty
    assert from_record(record) == WarmStarted("transfer", ["parent"], 1.0)


def test_transfer_priors_reach_the_sampler_but_not_the_best_or_the_counts() -> None:
    eng = engine("transfer", [0.1, 0.2, 0.3])
    actions = eng.decide(now=2.0)
    assert [a for a in actions if isinstance(a, SampleTrial)] == [SampleTrial(0)]
    _, trials, _, number = eng.sampler_request(0)
    assert number == 0
    assert [(t.number, t.state, t.value) for t in trials] == [
        (-3, SamplerState.COMPLETE, 0.1),
        (-2, SamplerState.COMPLETE, 0.2),
        (-1, SamplerState.COMPLETE, 0.3),
    ]
    assert eng.best() is None
    assert sum(eng.counts().values()) == len(eng.trials) == 2  # parallelTrials, not priors


def test_reuse_priors_count_toward_the_best_and_not_toward_max_trials() -> None:
    eng = engine("reuse", [0.3, 0.1, 0.2])
    best = eng.best()
    assert best is not None and (best.name, best.value) == ("parent-1", 0.1)
    eng.decide(now=2.0)
    assert len(eng.trials) == 2 and eng.spec.budget.maxTrials == 4


def test_reuse_a_prior_reaching_the_target_ends_the_experiment_at_once() -> None:
    objective = {"metric": "loss", "goal": "minimize", "target": 0.15}
    eng = engine("reuse", [0.3, 0.1], objective=objective)
    eng.decide(now=2.0)
    assert eng.ended is not None and eng.ended.reason == TARGET_REACHED
    assert "parent-1" in eng.ended.message and eng.trials == []


def test_replay_reads_the_priors_from_the_history_alone() -> None:
    eng = engine("transfer", [0.1, 0.2])
    eng.decide(now=2.0)
    again = Engine.replay(eng.spec, "child", [from_record(to_record(e)) for e in eng.history])
    assert again.warm == eng.warm and not again.needs_warm_start()
    assert again.sampler_request(0) == eng.sampler_request(0)
    # An experiment that started without them never reads them later.
    late = Engine(eng.spec, "child")
    late.decide(now=1.0)
    assert not late.needs_warm_start()
    late.record_warm_start(priors([0.1]))
    assert late.warm is None


def h2_priors(count: int) -> list[PriorTrial]:
    trials = []
    for i in range(count):
        x, y = (i * 0.37) % 1.0, (i * 0.61) % 1.0
        trials.append(PriorTrial("parent", f"parent-{i}", {"x": x, "y": y}, (x - 0.7) ** 2 + y))
    return trials


@pytest.mark.parametrize("algorithm", ["tpe", "bayesian", "cmaes"])
def test_with_enough_priors_the_model_based_samplers_skip_their_random_start(
    algorithm: str,
) -> None:
    parsed = parse_experiment(
        document({"experiments": ["parent"]}, algorithm={"name": algorithm, "seed": 1})
    ).spec
    cold = samplers.suggest(parsed, [], {}, 0)
    eng = Engine(parsed, "child")
    parent = ParentExperiment("parent", parsed.objective, h2_priors(20))
    eng.record_warm_start(warm_start(parsed, [parent], now=0.0))
    eng.decide(now=1.0)
    warm = samplers.suggest(*eng.sampler_request(0))
    assert cold is not None and warm is not None and warm.params != cold.params
    if algorithm == "cmaes":  # Warm Starting CMA-ES: its optimizer starts from them
        assert samplers.warm_sources(parsed, eng.sampler_request(0)[1])
        assert any(k.startswith("cma:") for k in warm.system_attrs)


def test_grid_skips_points_evaluated_before_with_reuse_only() -> None:
    grid = [
        {"name": "x", "type": "float", "min": 0.0, "max": 1.0, "step": 0.5},
        {"name": "y", "type": "categorical", "values": ["a"]},
    ]
    seen = [
        PriorTrial("parent", f"parent-{i}", {"x": x, "y": "a"}, 1.0)
        for i, x in enumerate([0.0, 0.5])
    ]
    for mode, expected in (("reuse", [{"x": 1.0, "y": "a"}]), ("transfer", None)):
        doc = document({"experiments": ["parent"], "mode": mode}, parameters=grid)
        doc["spec"]["algorithm"] = {"name": "grid"}
        parsed = parse_experiment(copy.deepcopy(doc)).spec
        eng = Engine(parsed, "child")
        eng.record_warm_start(WarmStarted(mode, ["parent"], 0.0, tuple(seen)))
        eng.decide(now=1.0)
        first = samplers.suggest(*eng.sampler_request(0))
        assert first is not None
        if expected is not None:
            assert [first.params] == expected
            eng.record_suggestion(0, first)
            eng.decide(now=1.0)
            assert samplers.suggest(*eng.sampler_request(1)) is None  # the grid is done


def test_warm_start_is_refused_with_pbt() -> None:
    pbt = {"name": "pbt", "resource": "step", "maxResource": 8, "interval": 2}
    doc = document({"experiments": ["a"]}, scheduler=pbt, checkpoints={"uri": "file:///tmp/c"})
    with pytest.raises(SpecError) as raised:
        parse_experiment(doc)
    assert raised.value.problems == [("spec.warmStart", "does not work with scheduler pbt")]


# The stored form of version 1, as written: a later kubetune must keep reading it.
GOLDEN = (
    '{"type":"WarmStarted","v":1,"warm_mode":"reuse","parents":["a","b"],"at":1796177627.2,'
    '"prior_trials":[{"experiment":"a","trial":"a-0","params":{"x":0.1,"y":"sgd"},'
    '"value":0.4},{"experiment":"b","trial":"b-7","params":{"x":1,"y":"adam"},"value":-2}],'
    '"left_out":{"x: outside [0, 1]":3,"missing parameter y":1},'
    '"mac":"0123456789abcdef0123456789abcdef","seq":0}'
)


def test_the_golden_record_reads() -> None:
    record = {k: v for k, v in json.loads(GOLDEN).items() if k not in ("mac", "seq")}
    assert from_record(record) == WarmStarted(
        "reuse",
        ["a", "b"],
        1796177627.2,
        (
            PriorTrial("a", "a-0", {"x": 0.1, "y": "sgd"}, 0.4),
            PriorTrial("b", "b-7", {"x": 1, "y": "adam"}, -2),
        ),
        {"x: outside [0, 1]": 3, "missing parameter y": 1},
    )
