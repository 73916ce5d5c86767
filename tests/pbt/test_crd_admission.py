"""A PBT experiment on a real API server: the CRD's schema and CEL rules take it, or
refuse it at the same field as the models."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.spec import SpecError, parse_experiment
from tests.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "trial_image" / "examples" / "digits-pbt.yaml"


@pytest.fixture(scope="module")
def ns(control_plane: ControlPlane) -> Iterator[str]:
    cp = control_plane
    cp.kubectl("apply", "-f", str(REPO / "crds" / "hpoexperiments.kubetune.dev.yaml"))
    cp.kubectl(
        "wait", "--for=condition=Established", "crd/hpoexperiments.kubetune.dev", "--timeout=60s"
    )
    name = f"pbt-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cp.kubectl("delete", "namespace", name, "--wait=false", check=False)


def example(name: str) -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    return copy.deepcopy(document)


def test_the_example_is_accepted(control_plane: ControlPlane, ns: str) -> None:
    document = example("pbt-ok")
    parse_experiment(document)
    applied = control_plane.kubectl(
        "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(document), check=False
    )
    assert applied.returncode == 0, applied.stderr


@pytest.mark.parametrize(
    ("case", "scheduler", "message"),
    [
        ("no-interval", {"interval": None}, "interval is required by scheduler pbt"),
        ("long-interval", {"interval": 99}, "interval must be between 1 and maxResource"),
    ],
)
def test_a_bad_interval_is_refused_at_its_field(
    control_plane: ControlPlane, ns: str, case: str, scheduler: dict[str, Any], message: str
) -> None:
    document = example(f"pbt-{case}")
    for key, value in scheduler.items():
        if value is None:
            document["spec"]["scheduler"].pop(key)
        else:
            document["spec"]["scheduler"][key] = value
    applied = control_plane.kubectl(
        "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(document), check=False
    )
    assert applied.returncode != 0, f"{case} was accepted"
    assert "spec.scheduler.interval" in applied.stderr and message in applied.stderr
    with pytest.raises(SpecError) as refused:
        parse_experiment(document)
    assert [p for p, _ in refused.value.problems] == ["spec.scheduler.interval"]
