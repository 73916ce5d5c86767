"""The operator's gang (operator/gang.py), pure: the pods and Service of an attempt and
what each rank's end means for it."""

from __future__ import annotations

from typing import Any

from kubetune.events import ExitKind
from kubetune.operator.gang import (
    LABEL_RANK,
    gang_at_start,
    rank_ended,
    rank_pods,
    trial_service,
)
from kubetune.operator.outcomes import Outcome
from kubetune.operator.pods import trial_pod
from kubetune.spec import parse_experiment
from kubetune.trialenv import AttemptContext

SPEC = {
    "apiVersion": "kubetune.dev/v1alpha1",
    "kind": "HPOExperiment",
    "metadata": {"name": "ddp"},
    "spec": {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": [{"name": "lr", "type": "float", "min": 0.01, "max": 0.1}],
        "budget": {"maxTrials": 2},
        "workers": 3,
        "trialTemplate": {
            "spec": {
                "containers": [
                    {
                        "name": "trial",
                        "image": "t",
                        "command": ["python", "t.py"],
                        "env": [{"name": "RANK", "value": "mine"}, {"name": "KEEP", "value": "1"}],
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }
                ]
            }
        },
    },
}


def single_pod(workers: int) -> dict[str, Any]:
    document = {**SPEC, "spec": {**SPEC["spec"], "workers": workers}}
    spec = parse_experiment(document).spec
    context = AttemptContext("ddp", "ddp-4", 2, {"lr": 0.05}, True, "http://e", "tok", "file:///c")
    return trial_pod(spec, "team", context, "uid-4")


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]
    }


def test_one_worker_keeps_its_single_pod_exactly() -> None:
    pod = single_pod(1)
    assert rank_pods(pod, 1) == [pod]
    assert pod["metadata"]["name"] == "ddp-4-a2"
    assert "hostname" not in pod["spec"] and "subdomain" not in pod["spec"]


def test_a_gang_of_pods_named_by_rank_with_torch_distributed_env() -> None:
    pod = single_pod(3)
    gang = rank_pods(pod, 3)
    names = [p["metadata"]["name"] for p in gang]
    assert names == ["ddp-4-a2-r0", "ddp-4-a2-r1", "ddp-4-a2-r2"]
    for rank, member in enumerate(gang):
        assert member["spec"]["hostname"] == names[rank]
        assert member["spec"]["subdomain"] == "ddp-4"
        assert member["metadata"]["labels"][LABEL_RANK] == str(rank)
        assert member["metadata"]["labels"]["kubetune.dev/attempt"] == "2"
        env = env_of(member)
        assert env["WORLD_SIZE"] == "3" and env["RANK"] == str(rank)
        assert env["LOCAL_RANK"] == "0" and env["LOCAL_WORLD_SIZE"] == "1"
        assert env["MASTER_ADDR"] == "ddp-4-a2-r0.ddp-4.team.svc"
        assert env["MASTER_PORT"] == "29500"
        assert env["KEEP"] == "1" and env["KUBETUNE_TRIAL"] == "ddp-4"
        ref = {"name": "ddp-kubetune-tokens-0", "key": "ddp-4"}
        assert env["KUBETUNE_TOKEN"] == {"secretKeyRef": ref}
        assert member["metadata"]["ownerReferences"][0]["uid"] == "uid-4"
    # The copies share nothing that one rank's changes could leak into another's.
    assert env_of(pod)["RANK"] == "mine"


def test_the_trials_headless_service() -> None:
    service = trial_service("team", "ddp", "ddp-4", "uid-4", "uid-exp")
    assert service["metadata"]["name"] == "ddp-4"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        "kubetune.dev/experiment": "ddp",
        "kubetune.dev/trial": "ddp-4",
    }
    owner, experiment = service["metadata"]["ownerReferences"]
    assert owner["kind"] == "HPOTrial" and owner["uid"] == "uid-4" and owner["controller"]
    # Owned by the experiment too: an HPOTrial put back finds it its own.
    assert experiment["kind"] == "HPOExperiment" and experiment["uid"] == "uid-exp"
    assert not experiment["controller"] and not experiment["blockOwnerDeletion"]


def test_a_rank_that_fails_fails_the_attempt_and_stops_the_others_at_once() -> None:
    verdict = rank_ended(1, 3, Outcome(ExitKind.EXITED, 3, "Error"))
    assert verdict.outcome == Outcome(ExitKind.EXITED, 3, "rank 1 of 3: Error")
    assert verdict.stop == (0, 2) and not verdict.graceful


def test_a_rank_lost_interrupts_the_whole_attempt() -> None:
    verdict = rank_ended(2, 3, Outcome(ExitKind.INTERRUPTED, None, "Evicted: node reclaimed"))
    assert verdict.outcome == Outcome(
        ExitKind.INTERRUPTED, None, "rank 2 of 3: Evicted: node reclaimed"
    )
    assert verdict.stop == (0, 1) and not verdict.graceful


def test_rank_zero_speaks_for_a_completed_attempt() -> None:
    assert rank_ended(1, 3, Outcome(ExitKind.EXITED, 0, "")).outcome is None
    verdict = rank_ended(0, 3, Outcome(ExitKind.EXITED, 0, ""))
    assert verdict.outcome == Outcome(ExitKind.EXITED, 0, "")
    assert verdict.stop == (1, 2) and verdict.graceful
    assert rank_ended(0, 3, None).outcome is None


def test_a_single_pod_outcome_is_unchanged() -> None:
    outcome = Outcome(ExitKind.EXITED, 3, "Error")
    assert rank_ended(0, 1, outcome).outcome == outcome
    assert rank_ended(0, 1, outcome).stop == ()


def test_what_a_restarted_operator_does_with_a_running_gang() -> None:
    def pod(phase: str, node: str | None = None) -> dict[str, Any]:
        return {"spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}

    names = ["t-1-a1-r0", "t-1-a1-r1"]
    assert gang_at_start({}, "t-1", 1, 2) == "launch"
    assert gang_at_start({names[0]: pod("Pending")}, "t-1", 1, 2) == "launch"
    assert gang_at_start({names[0]: pod("Pending", "n1")}, "t-1", 1, 2) == "interrupt"
    assert gang_at_start({names[1]: pod("Running", "n1")}, "t-1", 1, 2) == "interrupt"
    both = {n: pod("Running", "n1") for n in names}
    assert gang_at_start(both, "t-1", 1, 2) == "watch"
    assert gang_at_start({"t-1-a1": pod("Running", "n")}, "t-1", 1, 1) == "watch"
    assert gang_at_start({}, "t-1", 1, 1) == "launch"


def test_kueue_pod_groups_only_when_the_template_names_a_queue() -> None:
    pod = single_pod(3)
    assert all(
        "kueue.x-k8s.io/pod-group-name" not in p["metadata"]["labels"]
        and "kueue.x-k8s.io/pod-group-total-count" not in p["metadata"]["annotations"]
        for p in rank_pods(pod, 3)
    )
    pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-gpus"
    gang = rank_pods(pod, 3)
    for member in gang:
        labels, annotations = member["metadata"]["labels"], member["metadata"]["annotations"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-gpus"
        assert labels["kueue.x-k8s.io/pod-group-name"] == "ddp-4-a2"  # one group per attempt
        assert annotations["kueue.x-k8s.io/pod-group-total-count"] == "3"
        assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    # A single pod is no group.
    single = single_pod(1)
    single["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-gpus"
    assert "kueue.x-k8s.io/pod-group-name" not in rank_pods(single, 1)[0]["metadata"]["labels"]
