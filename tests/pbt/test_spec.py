"""Validation of a PBT experiment: every bad field named, each on its own line."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.spec import SpecError, parse_experiment


def document(scheduler: dict[str, Any], budget: dict[str, Any], **spec: Any) -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": "pbt"},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [{"name": "lr", "type": "float", "min": 1e-4, "max": 1, "scale": "log"}],
            "scheduler": {"name": "pbt", **scheduler},
            "budget": budget,
            "trialTemplate": {"spec": {"containers": [{"name": "t", "command": ["x"]}]}},
            **spec,
        },
    }


GOOD = {"resource": "epoch", "interval": 4, "maxResource": 40}
CHECKPOINTS = {"checkpoints": {"uri": "file:///tmp/ck"}}


def test_a_good_pbt_experiment() -> None:
    spec = parse_experiment(document(GOOD, {"maxTrials": 50, "parallelTrials": 8}, **CHECKPOINTS))
    scheduler = spec.spec.scheduler
    assert (scheduler.quantile, scheduler.resampleProbability) == (0.25, 0.25)
    assert scheduler.perturbationFactors == [0.8, 1.2]


def test_every_bad_field_is_named() -> None:
    bad = {
        "resource": "epoch",
        "interval": 50,
        "maxResource": 40,
        "quantile": 0.6,
        "resampleProbability": 1.5,
        "perturbationFactors": [1.2, 0],
    }
    with pytest.raises(SpecError) as caught:
        parse_experiment(document(bad, {"maxTrials": 1, "parallelTrials": 1}))
    assert caught.value.problems == [
        ("spec.scheduler.interval", "must be at most maxResource (40), got 50"),
        ("spec.scheduler.quantile", "must be in (0, 0.5], got 0.6"),
        ("spec.scheduler.resampleProbability", "must be in [0, 1], got 1.5"),
        ("spec.scheduler.perturbationFactors[1]", "must be a positive number, got 0.0"),
        ("spec.budget.parallelTrials", "pbt's population: at least 2, got 1"),
        (
            "spec.checkpoints",
            "required by scheduler pbt (members start from others' checkpoints)",
        ),
    ]


@pytest.mark.parametrize(
    ("scheduler", "path"),
    [
        ({"resource": "epoch", "maxResource": 40}, "spec.scheduler.interval"),
        ({"resource": "epoch", "interval": 0, "maxResource": 40}, "spec.scheduler.interval"),
        ({"interval": 4, "maxResource": 40}, "spec.scheduler.resource"),
        ({"resource": "epoch", "interval": 4}, "spec.scheduler.maxResource"),
        ({**GOOD, "quantile": 0}, "spec.scheduler.quantile"),
        ({**GOOD, "perturbationFactors": []}, "spec.scheduler.perturbationFactors"),
    ],
)
def test_each_bad_field(scheduler: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_experiment(document(scheduler, {"maxTrials": 9, "parallelTrials": 2}, **CHECKPOINTS))
    assert [p for p, _ in caught.value.problems] == [path]


def test_max_trials_below_the_population() -> None:
    with pytest.raises(SpecError) as caught:
        parse_experiment(document(GOOD, {"maxTrials": 4, "parallelTrials": 8}, **CHECKPOINTS))
    assert [p for p, _ in caught.value.problems] == ["spec.budget.maxTrials"]
