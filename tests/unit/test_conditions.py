"""An experiment's conditions: its phase conditions and kstatus' Ready/Reconciling/Stalled."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.conditions import experiment_conditions

T0, T1 = "2026-12-01T00:00:00Z", "2026-12-01T00:05:00Z"


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' generic rules for a custom resource (sigs.k8s.io/cli-utils
    pkg/kstatus/status, checkGenericProperties), as Flux's health checks apply them."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    observed = status.get("observedGeneration")
    if observed is not None and generation is not None and observed != generation:
        return "InProgress"
    for condition in status.get("conditions") or []:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return "InProgress"
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return "Failed"
    return "Current"


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


@pytest.mark.parametrize(
    ("phase", "reason", "true", "kstatus_says"),
    [
        ("Running", "Running", {"Running", "Reconciling"}, "InProgress"),
        ("Pending", "Pending", {"Reconciling"}, "InProgress"),
        ("Succeeded", "TargetReached", {"Succeeded", "Ready"}, "Current"),
        ("Failed", "TooManyFailedTrials", {"Failed", "Stalled"}, "Failed"),
        ("Failed", "Invalid", {"Failed", "Stalled"}, "Failed"),
    ],
)
def test_each_phase_sets_the_kstatus_conditions_readers_expect(
    phase: str, reason: str, true: set[str], kstatus_says: str
) -> None:
    conditions = experiment_conditions(phase, reason, "why", 3, [], T0)
    assert [c["type"] for c in conditions] == [
        "Running",
        "Succeeded",
        "Failed",
        "Ready",
        "Reconciling",
        "Stalled",
    ]
    assert {c["type"] for c in conditions if c["status"] == "True"} == true
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T0 for c in conditions)
    for condition in conditions:
        if condition["status"] == "True":
            assert (condition["reason"], condition["message"]) == (reason, "why")
    obj = {"metadata": {"generation": 3}, "status": {"observedGeneration": 3}}
    obj["status"]["conditions"] = conditions
    assert kstatus(obj) == kstatus_says


def test_ready_says_why_it_is_not_ready_and_the_others_say_not() -> None:
    running = by_type(experiment_conditions("Running", "Running", "2 of 9 trials done", 1, [], T0))
    assert running["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "Running",
        "message": "2 of 9 trials done",
        "lastTransitionTime": T0,
        "observedGeneration": 1,
    }
    assert (running["Stalled"]["reason"], running["Stalled"]["message"]) == ("NotStalled", "")
    assert running["Succeeded"]["reason"] == "NotSucceeded"


def test_transition_times_move_only_when_a_status_changes() -> None:
    first = experiment_conditions("Running", "Running", "0 of 9", 1, [], T0)
    again = by_type(experiment_conditions("Running", "Running", "5 of 9", 2, first, T1))
    assert {c["lastTransitionTime"] for c in again.values()} == {T0}
    assert {c["observedGeneration"] for c in again.values()} == {2}  # kept current
    done = by_type(experiment_conditions("Succeeded", "MaxTrialsReached", "", 2, first, T1))
    moved = {kind for kind, c in done.items() if c["lastTransitionTime"] == T1}
    assert moved == {"Running", "Succeeded", "Ready", "Reconciling"}


def test_a_status_about_an_older_generation_is_in_progress_for_kstatus() -> None:
    conditions = experiment_conditions("Succeeded", "MaxTrialsReached", "", 1, [], T0)
    obj = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    obj["status"]["conditions"] = conditions
    assert kstatus(obj) == "InProgress"
