"""The checked-in CRDs are what `kubetune.crd` generates, and what it generates is a
structural schema (no cluster needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import crd
from kubetune.spec import ExperimentSpec

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    diff = crd.drift(REPO / "crds")
    assert not diff, f"crds/ is out of date; run `python -m kubetune.crd`:\n{diff}"


def test_check_flag_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["--out", str(tmp_path)]) == 0
    assert crd.main(["--check", "--out", str(tmp_path)]) == 0
    path = tmp_path / "hpotrials.kubetune.dev.yaml"
    path.write_text(path.read_text().replace("maxItems: 2000", "maxItems: 3"))
    capsys.readouterr()
    assert crd.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert any(line.startswith("-") and line.endswith("maxItems: 3") for line in lines)
    assert any(line.startswith("+") and line.endswith("maxItems: 2000") for line in lines)
    assert "out of date" in out.err


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("make", [crd.experiment_crd, crd.trial_crd])
def test_schemas_are_structural(make: Any) -> None:
    """What the API server demands of a CRD schema, checked before any cluster sees it."""
    schema = make()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        where = path or "<root>"
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), where
        for keyword in ("$ref", "$defs", "anyOf", "const", "title", "nullable"):
            assert keyword not in node, f"{where}: {keyword}"
        assert not ("properties" in node and "additionalProperties" in node), where
        assert node.get("additionalProperties") is not False, where
        if node.get("type") == "array":
            assert "items" in node, where
        for branch in node.get("oneOf", []):  # junctors: value validations only
            assert not {"type", "description", "default"} & set(branch), where


def test_every_model_field_is_in_the_schema() -> None:
    spec = crd.experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = spec["properties"]["spec"]
    paths = {path for path, _ in _nodes(spec)}
    for name in ExperimentSpec.model_fields:
        assert f".{name}" in paths
    for field in ("name", "type", "min", "max", "scale", "step", "values", "when"):
        assert f".parameters[].{field}" in paths
    for field in ("name", "image", "command", "args", "env", "workingDir"):
        assert f".trialTemplate.spec.containers[].{field}" in paths


def test_no_defaults_inside_the_parameter_union() -> None:
    """An int's `step: 1` default would land on float parameters (and `scale` on
    categorical ones, which the models refuse)."""
    spec = crd.experiment_spec_schema()
    for path, node in _nodes(spec["properties"]["parameters"]):
        assert "default" not in node, path


def test_a_new_json_schema_keyword_is_not_dropped_silently() -> None:
    with pytest.raises(ValueError, match="uniqueItems"):
        crd.structural({"type": "array", "items": {"type": "string"}, "uniqueItems": True})


def test_crd_names_and_printer_columns() -> None:
    experiment = crd.experiment_crd()["spec"]
    assert experiment["names"]["shortNames"] == ["hpoexp", "hpoe"]
    assert experiment["names"]["categories"] == ["kubetune"]
    version = experiment["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Phase", ".status.phase"),
        ("Done", ".status.trialsDone"),
        ("Total", ".spec.budget.maxTrials"),
        ("Running", ".status.trialsRunning"),
        ("Best", ".status.bestValue"),
        ("Cost", ".status.costUSD"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    trial = crd.trial_crd()["spec"]
    assert trial["names"]["shortNames"] == ["hpot"]
    columns = [c["name"] for c in trial["versions"][0]["additionalPrinterColumns"]]
    # Parent, From and Gen (pbt's lineage) show with -o wide.
    assert columns == [
        "Experiment",
        "Phase",
        "Value",
        "Resource",
        "Node",
        "Parent",
        "From",
        "Gen",
        "Age",
    ]


def test_crds_kustomization_lists_both_files() -> None:
    kustomization = yaml.safe_load((REPO / "crds" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [
        "hpoexperiments.kubetune.dev.yaml",
        "hpotrials.kubetune.dev.yaml",
    ]


def test_resource_quantities_are_checked_with_cel() -> None:
    """`cpu: bogus` is refused by the CRD (tests/security/test_admission_policy.py
    applies it): every container's and init container's limits and requests."""
    spec = crd.experiment_spec_schema()
    pod = spec["properties"]["trialTemplate"]["properties"]["spec"]
    for kind in ("containers", "initContainers"):
        resources = pod["properties"][kind]["items"]["properties"]["resources"]
        for section in ("limits", "requests"):
            value = resources["properties"][section]["additionalProperties"]
            assert value["x-kubernetes-int-or-string"] is True
            (rule,) = value["x-kubernetes-validations"]
            assert "isQuantity(self)" in rule["rule"], kind
