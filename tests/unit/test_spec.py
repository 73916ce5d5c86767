"""The experiment spec: a valid example loads, and every mistake names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kubetune.spec import SpecError, load_experiment, parse_duration, parse_experiment

REPO = Path(__file__).resolve().parents[2]


def valid() -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": "digits-mlp"},
        "spec": {
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "parameters": [
                {"name": "lr", "type": "float", "min": 1e-4, "max": 0.3, "scale": "log"},
                {"name": "hidden", "type": "int", "min": 16, "max": 512, "scale": "log"},
                {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]},
                {
                    "name": "momentum",
                    "type": "float",
                    "min": 0.0,
                    "max": 0.99,
                    "when": {"optimizer": "sgd"},
                },
            ],
            "algorithm": {"name": "bayesian", "seed": 7},
            "scheduler": {
                "name": "asha",
                "resource": "epoch",
                "minResource": 1,
                "maxResource": 27,
                "reductionFactor": 3,
            },
            "budget": {
                "maxTrials": 40,
                "parallelTrials": 4,
                "maxFailedTrials": 3,
                "maxDuration": "2h",
            },
            "trialTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trial",
                            "image": "kubetune/trial:latest",
                            "command": ["python", "examples/digits.py"],
                            "args": ["--lr={{params.lr}}", "--hidden={{params.hidden}}"],
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ],
                }
            },
            "checkpoints": {"uri": "file:///tmp/kubetune-ckpt"},
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of the valid document with one field set (value None deletes it)."""
    document = copy.deepcopy(valid())
    node: Any = document
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is None:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return document


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_experiment(document)
    return caught.value.problems


def test_the_issue_example_is_valid() -> None:
    experiment = parse_experiment(valid())
    assert experiment.name == "digits-mlp"
    assert [p.name for p in experiment.spec.parameters] == ["lr", "hidden", "optimizer", "momentum"]
    assert experiment.spec.budget.max_duration_seconds() == 7200


def test_shipped_examples_are_valid() -> None:
    for path in (REPO / "trial_image" / "examples").glob("*.yaml"):
        assert load_experiment(path).kind == "HPOExperiment"


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        ("spec.budget.maxTrails", 3, "spec.budget.maxTrails", "unknown field"),
        ("spec.parameters.0.min", 0.5, "spec.parameters[0].min", "must be less than max"),
        ("spec.parameters.0.min", 0.0, "spec.parameters[0].min", "greater than 0 with scale log"),
        ("spec.parameters.1.max", 16, "spec.parameters[1].min", "must be less than max"),
        (
            "spec.parameters.1.name",
            "lr",
            "spec.parameters[1].name",
            "duplicate parameter name 'lr'",
        ),
        (
            "spec.parameters.3.when",
            {"optimiser": "sgd"},
            "spec.parameters[3].when.optimiser",
            "unknown parameter",
        ),
        (
            "spec.parameters.3.when",
            {"optimizer": "rmsprop"},
            "spec.parameters[3].when.optimizer",
            "not a value of optimizer",
        ),
        (
            "spec.trialTemplate.spec.containers.0.args",
            ["--lr={{params.learning_rate}}"],
            "spec.trialTemplate.spec.containers[0].args[0]",
            "names no parameter",
        ),
        ("spec.scheduler.maxResource", 2, "spec.scheduler.maxResource", "at least two rungs"),
        ("spec.scheduler.minResource", 27, "spec.scheduler.minResource", "less than maxResource"),
        ("spec.scheduler.resource", None, "spec.scheduler.resource", "required by scheduler asha"),
        ("spec.budget.maxDuration", "2 hours", "spec.budget.maxDuration", "not a duration"),
        ("spec.budget.maxDuration", "0s", "spec.budget.maxDuration", "longer than zero"),
        ("spec.budget.maxTrials", 0, "spec.budget.maxTrials", "greater than or equal to 1"),
        ("spec.objective.goal", "minimise", "spec.objective.goal", "'minimize' or 'maximize'"),
        ("spec.algorithm.name", "smac", "spec.algorithm.name", "'random'"),
        ("spec.parameters.2.values", ["adam", "adam"], "spec.parameters[2].values", "duplicate"),
        ("spec.parameters.2.values", [], "spec.parameters[2].values", "at least 1 item"),
        ("spec.parameters.0.type", "double", "spec.parameters[0]", "'float', 'int', 'categorical'"),
        ("spec.checkpoints.uri", "gs://bucket", "spec.checkpoints.uri", "file:///"),
        (
            "spec.trialTemplate.spec.containers",
            [],
            "spec.trialTemplate.spec.containers",
            "at least 1",
        ),
        (
            "spec.trialTemplate.spec.restartPolicy",
            "OnFailure",
            "spec.trialTemplate.spec.restartPolicy",
            "'Never'",
        ),
        ("metadata.name", "Digits_MLP", "metadata.name", "should match pattern"),
        ("spec.objective", None, "spec.objective", "Field required"),
    ],
)
def test_each_mistake_names_its_field(path: str, value: Any, field: str, reason: str) -> None:
    found = problems(with_change(path, value))
    assert any(where == field and reason in why for where, why in found), found


def test_grid_needs_steps_for_floats_and_a_finite_size() -> None:
    document = with_change("spec.algorithm", {"name": "grid"})
    found = problems(document)
    assert ("spec.parameters[0].step", "required for float parameters with algorithm grid") in found
    document["spec"]["parameters"] = [
        {"name": f"p{i}", "type": "int", "min": 0, "max": 99} for i in range(3)
    ]
    document["spec"]["trialTemplate"]["spec"]["containers"][0]["args"] = []
    assert any("more than 100000 points" in why for _, why in problems(document))


def test_all_problems_are_reported_at_once() -> None:
    document = with_change("spec.parameters.0.min", 0.5)
    document["spec"]["budget"]["maxTrails"] = 1
    fields = {where for where, _ in problems(document)}
    assert {"spec.parameters[0].min", "spec.budget.maxTrails"} <= fields


def test_load_experiment_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=r"nope\.yaml"):
        load_experiment(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_experiment(broken)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\napiVersion: v1\n")
    with pytest.raises(SpecError, match="exactly one HPOExperiment"):
        load_experiment(other)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1h0m5s", 3605)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5", "1d", "-1h", "1.5h", "30m1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)
