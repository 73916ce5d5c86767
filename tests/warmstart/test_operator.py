"""spec.warmStart on the test control plane: the real operator, CRD and RBAC."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    apply,
    experiment,
    get,
    status,
    trials,
    wait_finished,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NO_RUNGS = {"name": "none", "maxResource": 3}


def child(name: str, parents: list[str], max_trials: int = 2) -> dict[str, Any]:
    document = experiment(name, max_trials=max_trials, scheduler=NO_RUNGS, sleep=0.01)
    document["spec"]["warmStart"] = {"experiments": parents, "mode": "transfer"}
    return document


def warm_records(control_plane: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    history = status(control_plane, namespace, name).get("history") or []
    return [r for r in history if r["type"] == "WarmStarted"]


def refused(control_plane: Any, namespace: str, document: dict[str, Any]) -> str:
    with pytest.raises(subprocess.CalledProcessError) as raised:
        apply(control_plane, namespace, document)
    return str(raised.value.stderr)


def test_a_child_reads_its_parent_once_and_goes_on_after_the_parent_is_deleted(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    parent = experiment("parent", max_trials=4, scheduler=NO_RUNGS, sleep=0.01)
    apply(control_plane, namespace, parent)
    assert wait_finished(control_plane, namespace, "parent", operator)["phase"] == "Succeeded"

    apply(control_plane, namespace, child("child", ["parent"]))
    done = wait_finished(control_plane, namespace, "child", operator)
    assert done["phase"] == "Succeeded" and done["trialsTotal"] == 2
    assert done["warmStart"] == {
        "mode": "transfer",
        "experiments": ["parent"],
        "loaded": 4,
        "leftOut": 0,
        "reasons": {},
    }
    [record] = warm_records(control_plane, namespace, "child")
    assert [t["trial"] for t in record["prior_trials"]] == [f"parent-{i}" for i in range(4)]
    # transfer: the parent's trials are not the child's best
    assert done["bestTrial"].startswith("child-")
    said = [e["message"] for e in get(control_plane, namespace, "events")["items"]]
    assert "warm start (transfer): 4 earlier trials loaded from parent, 0 left out" in said

    # The parent is gone and the operator restarts: the child is rebuilt from its own
    # history, and a raised budget goes on without reading the parent again.
    control_plane.kubectl("delete", "hpoexperiment", "parent", "-n", namespace, "--wait=true")
    operator.stop()
    operator.start()
    control_plane.kubectl(
        "patch",
        "hpoexperiment",
        "child",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"budget": {"maxTrials": 4}}}),
    )
    more = wait_for(
        "the raised budget",
        lambda: (s := status(control_plane, namespace, "child")).get("trialsDone") == 4 and s,
        180,
        operator.log_tail,
    )
    assert more["phase"] == "Succeeded" and more["warmStart"]["loaded"] == 4
    assert warm_records(control_plane, namespace, "child") == [record]
    names = sorted(t["metadata"]["name"] for t in trials(control_plane, namespace))
    assert names == ["child-0", "child-1", "child-2", "child-3"]


def test_a_missing_parent_fails_the_experiment_naming_the_field(
    control_plane: Any, namespace: str, operator: OperatorProcess
) -> None:
    # A parent of the same name in another namespace is not found: same namespace only.
    other = f"{namespace}-other"
    control_plane.kubectl("create", "namespace", other)
    try:
        apply(control_plane, other, experiment("elsewhere", max_trials=1, scheduler=NO_RUNGS))
        apply(control_plane, namespace, child("orphan", ["elsewhere"]))
        failed = wait_finished(control_plane, namespace, "orphan", operator, timeout=60)
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false")
    assert (failed["phase"], failed["reason"]) == ("Failed", "WarmStartFailed")
    assert failed["message"] == (
        f"spec.warmStart.experiments[0]: no HPOExperiment 'elsewhere' in namespace '{namespace}'"
    )
    assert not trials(control_plane, namespace)


def test_the_crd_refuses_a_bad_warm_start(
    control_plane: Any, namespace: str, installed: Any
) -> None:
    assert "must not name this experiment itself" in refused(
        control_plane, namespace, child("selfish", ["selfish"])
    )
    assert "must not name an experiment twice" in refused(
        control_plane, namespace, child("twice", ["a", "a"])
    )
    bad_mode = child("mode", ["a"])
    bad_mode["spec"]["warmStart"]["mode"] = "copy"
    assert "spec.warmStart.mode" in refused(control_plane, namespace, bad_mode)
    apply(control_plane, namespace, child("fixed", ["a"]))
    changed = child("fixed", ["b"])
    assert "spec.warmStart cannot change" in refused(control_plane, namespace, changed)


def test_a_warm_start_failure_stays_failed_after_a_restart_once_the_parent_exists(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    """Failed is terminal: the restarted operator decides from the stored status, not from
    whether the earlier experiment exists by then (it would start a Failed experiment)."""
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, child("early", ["later"]))
    failed = wait_finished(control_plane, namespace, "early", operator, timeout=60)
    assert (failed["phase"], failed["reason"]) == ("Failed", "WarmStartFailed")

    operator.stop()
    apply(control_plane, namespace, experiment("later", max_trials=2, scheduler=NO_RUNGS))
    operator.start()
    # The parent finishing shows the restarted operator has loaded this namespace's
    # experiments, the child among them.
    assert wait_finished(control_plane, namespace, "later", operator)["phase"] == "Succeeded"
    after = status(control_plane, namespace, "early")
    assert (after["phase"], after["reason"], after["message"]) == (
        "Failed",
        "WarmStartFailed",
        failed["message"],
    )
    assert not warm_records(control_plane, namespace, "early")
    names = [t["metadata"]["name"] for t in trials(control_plane, namespace)]
    assert not [n for n in names if n.startswith("early-")]


def test_a_parent_being_deleted_is_not_read(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    """A parent with a deletionTimestamp loses its HPOTrials (and so its trials' reports)
    while it is read: what would be read is a part, chosen by timing. Refused instead."""
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    parent = experiment("going", max_trials=2, scheduler=NO_RUNGS, sleep=0.01)
    parent["metadata"]["finalizers"] = ["example.com/hold"]  # deleting, not yet deleted
    apply(control_plane, namespace, parent)
    assert wait_finished(control_plane, namespace, "going", operator)["phase"] == "Succeeded"
    control_plane.kubectl("delete", "hpoexperiment", "going", "-n", namespace, "--wait=false")
    try:
        apply(control_plane, namespace, child("after", ["going"]))
        failed = wait_finished(control_plane, namespace, "after", operator, timeout=60)
        assert (failed["phase"], failed["reason"]) == ("Failed", "WarmStartFailed")
        assert failed["message"] == (
            "spec.warmStart.experiments[0]: HPOExperiment 'going' is being deleted"
        )
    finally:
        control_plane.kubectl(
            "patch",
            "hpoexperiment",
            "going",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": None}}),
        )
