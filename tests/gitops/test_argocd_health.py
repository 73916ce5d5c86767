"""kubetune's Argo CD health check, run in a real Lua on statuses the operator wrote."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitops.argocd import CM_KEY, CM_PATCH, HEALTH_LUA, health

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("running", "Progressing", "Running: 0 of 2 trials done"),
        (
            "succeeded",
            "Healthy",
            "TargetReached: best trial hit-2: loss=0.01 reached the target 0.05",
        ),
        (
            "failed",
            "Degraded",
            "TooManyFailedTrials: 1 trials failed, more than maxFailedTrials (0)",
        ),
        (
            "invalid",
            "Degraded",
            "Invalid: spec.trialTemplate.spec.containers[0].command[2]: {{params.nope}} "
            "names no parameter",
        ),
    ],
)
def test_health_of_statuses_the_operator_wrote(name: str, status: str, message: str) -> None:
    assert health(fixture(name)) == {"status": status, "message": message}


def test_an_experiment_without_a_status_yet_is_progressing() -> None:
    obj = fixture("running")
    del obj["status"]
    assert health(obj)["status"] == "Progressing"
    obj["status"] = {}
    assert health(obj)["status"] == "Progressing"


def test_a_status_about_an_older_generation_is_progressing_even_if_it_says_succeeded() -> None:
    # The spec changed (a raised budget): the old Succeeded is no answer about the new one.
    obj = fixture("succeeded")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    result = health(obj)
    assert result["status"] == "Progressing"
    assert "observe generation" in result["message"]


def test_an_unknown_phase_is_unknown_not_healthy() -> None:
    obj = copy.deepcopy(fixture("running"))
    obj["status"]["phase"] = "Exploding"
    assert health(obj)["status"] == "Unknown"


def test_the_configmap_patch_carries_the_script_verbatim_under_argo_s_key() -> None:
    document = yaml.safe_load(CM_PATCH.read_text())
    assert (document["kind"], document["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert document["data"][CM_KEY] == HEALTH_LUA.read_text()
    assert health(fixture("failed"), script=document["data"][CM_KEY])["status"] == "Degraded"
