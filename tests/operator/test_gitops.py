"""What GitOps tools and pipelines read, on the real control plane with the real operator.

`objective.target` ends an experiment with TargetReached; `kubectl wait` itself waits on
the conditions (Succeeded, Stalled, Reconciling); observedGeneration follows the spec;
Argo CD's health check (manifests/argocd/health.lua, in a real Lua) reads the statuses.

With KUBETUNE_GITOPS_FIXTURES=DIR the objects seen are written there: that is how
tests/gitops/fixtures/ was captured.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.gitops.argocd import health
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    TRIALS,
    OperatorProcess,
    apply,
    experiment,
    get,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NO_SCHEDULER = {"name": "none"}


def target_experiment(name: str, hit: int, *, parallel: int, max_trials: int) -> dict[str, Any]:
    command = ["python", str(TRIALS / "target.py"), f"--hit={hit}", "--seconds=300"]
    document = experiment(
        name, command=command, max_trials=max_trials, parallel=parallel, scheduler=NO_SCHEDULER
    )
    document["spec"]["objective"]["target"] = 0.05
    return document


def kubectl_wait(control_plane: Any, namespace: str, name: str, condition: str) -> float:
    """`kubectl wait --for=condition=...` as a pipeline runs it; the seconds it took."""
    started = time.monotonic()
    control_plane.kubectl(
        "wait",
        f"--for=condition={condition}",
        f"hpoexperiment/{name}",
        "-n",
        namespace,
        "--timeout=150s",
        timeout=170,
    )
    return time.monotonic() - started


def captured(control_plane: Any, namespace: str, name: str, fixture: str) -> dict[str, Any]:
    """The experiment as the API server returns it (written out when capturing)."""
    obj = get(control_plane, namespace, "hpoexperiment", name)
    obj["metadata"].pop("managedFields", None)
    out = os.environ.get("KUBETUNE_GITOPS_FIXTURES")
    if out:
        Path(out, f"{fixture}.json").write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return obj


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def kstatus_conditions_of(obj: dict[str, Any]) -> dict[str, str]:
    found = conditions(obj)
    return {kind: found[kind] for kind in ("Ready", "Reconciling", "Stalled")}


def test_target_conditions_and_health_on_the_cluster(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=4, taints=GPU_NODE_TAINTS)

    # Running: Reconciling, Progressing; the status follows a new generation.
    apply(control_plane, namespace, target_experiment("slow", 99, parallel=1, max_trials=2))
    kubectl_wait(control_plane, namespace, "slow", "Reconciling")
    wait_for(
        "a report from the running trial",
        lambda: get(control_plane, namespace, "hpoexperiment", "slow")["status"].get("bestValue"),
        120,
        operator.log_tail,
    )
    running = captured(control_plane, namespace, "slow", "running")
    assert running["status"]["phase"] == "Running"
    assert kstatus_conditions_of(running) == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }
    assert running["status"]["observedGeneration"] == running["metadata"]["generation"] == 1
    assert health(running)["status"] == "Progressing"
    assert "trials done" in health(running)["message"]
    control_plane.kubectl(
        "patch",
        "hpoexperiment",
        "slow",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"budget": {"maxTrials": 3}}}),
    )
    control_plane.kubectl(
        "wait",
        "--for=jsonpath={.status.observedGeneration}=2",
        "hpoexperiment/slow",
        "-n",
        namespace,
        "--timeout=60s",
        timeout=70,
    )
    observed = get(control_plane, namespace, "hpoexperiment", "slow")["status"]["conditions"]
    assert {c["observedGeneration"] for c in observed} == {2}
    control_plane.kubectl("delete", "hpoexperiment", "slow", "-n", namespace, "--wait=false")

    # The target: trial 2 reaches it at once; trials 0 and 1 would train for 5 minutes.
    apply(control_plane, namespace, target_experiment("hit", 2, parallel=3, max_trials=20))
    took = kubectl_wait(control_plane, namespace, "hit", "Succeeded")
    assert took < 120, f"{took:.0f}s: the running trials were waited for"
    done = captured(control_plane, namespace, "hit", "succeeded")
    status = done["status"]
    assert (status["phase"], status["reason"]) == ("Succeeded", "TargetReached")
    assert (status["bestTrial"], status["bestValue"]) == ("hit-2", 0.01)
    assert status["trialsTotal"] == 3
    phases = {
        t["metadata"]["name"]: (t["status"]["phase"], t["status"]["reason"])
        for t in trials(control_plane, namespace)
        if t["spec"]["experiment"] == "hit"
    }
    assert phases["hit-0"] == phases["hit-1"] == ("Stopped", "TargetReached")
    assert phases["hit-2"][0] == "Completed"
    assert kstatus_conditions_of(done) == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert health(done) == {"status": "Healthy", "message": f"TargetReached: {status['message']}"}

    # Failed (more failed trials than allowed): Stalled, Degraded.
    failing = experiment(
        "fails",
        command=["python", str(TRIALS / "quadratic.py"), "--fail-if-x-above=-2"],
        max_trials=3,
        parallel=1,
        scheduler=NO_SCHEDULER,
    )
    failing["spec"]["budget"]["maxFailedTrials"] = 0
    apply(control_plane, namespace, failing)
    kubectl_wait(control_plane, namespace, "fails", "Stalled")
    failed = captured(control_plane, namespace, "fails", "failed")
    assert (failed["status"]["phase"], failed["status"]["reason"]) == (
        "Failed",
        "TooManyFailedTrials",
    )
    assert conditions(failed)["Failed"] == "True"
    assert kstatus_conditions_of(failed) == {
        "Ready": "False",
        "Reconciling": "False",
        "Stalled": "True",
    }
    assert health(failed)["status"] == "Degraded"
    assert health(failed)["message"].startswith("TooManyFailedTrials: 1 trials failed")

    # Invalid (what the CRD cannot see, the operator refuses): Stalled, Degraded.
    invalid = experiment("invalid", command=["python", "train.py", "--lr={{params.nope}}"])
    apply(control_plane, namespace, invalid)
    kubectl_wait(control_plane, namespace, "invalid", "Stalled")
    refused = captured(control_plane, namespace, "invalid", "invalid")
    assert (refused["status"]["phase"], refused["status"]["reason"]) == ("Failed", "Invalid")
    assert refused["status"]["observedGeneration"] == refused["metadata"]["generation"]
    assert kstatus_conditions_of(refused)["Stalled"] == "True"
    assert health(refused)["status"] == "Degraded"
    assert "{{params.nope}} names no parameter" in health(refused)["message"]
