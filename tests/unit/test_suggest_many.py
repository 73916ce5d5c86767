"""A batch of suggestions equals the same suggestions asked one at a time."""

from __future__ import annotations

import pytest

from kubetune.samplers import SamplerState, SamplerTrial, suggest, suggest_many
from kubetune.spec import parse_experiment
from tests.unit.test_spec import valid


@pytest.mark.parametrize("algorithm", ["random", "tpe", "sobol", "cmaes", "grid", "bayesian"])
def test_batch_equals_one_at_a_time(algorithm: str) -> None:
    document = valid()
    document["spec"]["algorithm"] = {"name": algorithm, "seed": 11, "startupTrials": 2}
    if algorithm == "grid":
        for parameter in document["spec"]["parameters"]:
            if parameter["type"] == "float":
                parameter.update(scale="linear", step=0.1, min=0.1, max=0.3)
            if parameter["type"] == "int":
                parameter.update(scale="linear", min=16, max=18)
    spec = parse_experiment(document).spec
    history: list[SamplerTrial] = []
    attrs: dict = {}
    for number in range(3):  # a few finished trials first
        suggestion = suggest(spec, history, attrs, number)
        assert suggestion is not None
        value = float(number) if algorithm != "grid" else 1.0 + number
        history.append(
            SamplerTrial(
                number, suggestion.params, SamplerState.COMPLETE, value, {}, suggestion.system_attrs
            )
        )
        attrs = suggestion.study_attrs
    batch = suggest_many(spec, history, attrs, [3, 4, 5, 6])
    one_by_one = []
    sequential = list(history)
    for number in [3, 4, 5, 6]:
        suggestion = suggest(spec, sequential, attrs, number)
        one_by_one.append(suggestion)
        assert suggestion is not None
        sequential.append(
            SamplerTrial(
                number,
                suggestion.params,
                SamplerState.RUNNING,
                system_attrs=suggestion.system_attrs,
            )
        )
        attrs = suggestion.study_attrs
    assert [s.params for s in batch if s] == [s.params for s in one_by_one if s]
    assert len({tuple(sorted(s.params.items())) for s in batch if s}) == 4
