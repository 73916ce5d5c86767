"""Experiments side by side, a broken one among them, budgets raised, deletion."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    apply,
    experiment,
    finished,
    get,
    status,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def second_namespace(control_plane: Any, namespace: str) -> Any:
    name = f"{namespace}-b"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_experiments_in_several_namespaces_and_a_broken_one(
    control_plane: Any,
    namespace: str,
    second_namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    process_node_factory(gpus=4, taints=GPU_NODE_TAINTS)
    # Same name in two namespaces: independent experiments.
    apply(control_plane, namespace, experiment("twin", max_trials=4, parallel=2))
    apply(control_plane, second_namespace, experiment("twin", max_trials=3, parallel=2))
    # Admitted by the API server (CEL cannot see into `when`), refused by the operator.
    broken = experiment("broken", max_trials=2)
    broken["spec"]["parameters"][1]["when"] = {"nope": "a"}
    apply(control_plane, namespace, broken)
    for ns, total in ((namespace, 4), (second_namespace, 3)):
        done = wait_for(
            f"twin in {ns}",
            lambda ns=ns: finished(control_plane, ns, "twin"),
            240,
            operator.log_tail,
        )
        assert done["phase"] == "Succeeded" and done["trialsTotal"] == total
    invalid = status(control_plane, namespace, "broken")
    assert invalid["phase"] == "Failed" and invalid["reason"] == "Invalid"
    assert "spec.parameters[1].when.nope: unknown parameter" in invalid["message"]
    assert not [t for t in trials(control_plane, namespace) if t["spec"]["experiment"] == "broken"]
    events = get(control_plane, namespace, "events")["items"]
    assert any(e["reason"] == "Invalid" and e["type"] == "Warning" for e in events)


def test_raising_the_budget_continues_a_finished_experiment(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    scheduler = {"name": "none", "maxResource": 3}
    apply(control_plane, namespace, experiment("grow", max_trials=2, scheduler=scheduler))
    first = wait_for("the first budget", lambda: finished(control_plane, namespace, "grow"), 180)
    assert first["phase"] == "Succeeded" and first["trialsTotal"] == 2
    control_plane.kubectl(
        "patch",
        "hpoexperiment",
        "grow",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"budget": {"maxTrials": 4}}}',
    )
    done = wait_for(
        "the raised budget",
        lambda: (s := finished(control_plane, namespace, "grow")) and s["trialsTotal"] == 4 and s,
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsDone"] == 4
    names = sorted(t["metadata"]["name"] for t in trials(control_plane, namespace))
    assert names == ["grow-0", "grow-1", "grow-2", "grow-3"]
    # The first two were not run again.
    for trial in trials(control_plane, namespace):
        launches = [r for r in trial["status"]["history"] if r["type"] == "TrialLaunched"]
        assert len(launches) == 1


def test_deleting_an_experiment_stops_its_pods_and_removes_its_trials(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    node = process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("doomed", max_trials=4, parallel=2, sleep=1.0))
    wait_for(
        "running trial pods",
        lambda: [
            p
            for p in get(control_plane, namespace, "pods")["items"]
            if p["status"].get("phase") == "Running"
        ],
        120,
        operator.log_tail,
    )
    running = [p["metadata"]["name"] for p in get(control_plane, namespace, "pods")["items"]]
    control_plane.kubectl("delete", "hpoexperiment", "doomed", "-n", namespace, "--timeout=60s")
    wait_for(
        "trials and pods to be garbage-collected",
        lambda: (
            not trials(control_plane, namespace)
            and not get(control_plane, namespace, "pods")["items"]
        ),
        120,
    )
    wait_for(
        "the trial processes to end",
        lambda: all(node.pid(namespace, name) is None for name in running),
        60,
    )
