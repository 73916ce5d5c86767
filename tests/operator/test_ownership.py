"""kubetune owns its objects, level-triggered (issue 11), on the real control plane.

What people with ordinary rights do to an experiment's objects by hand (delete an
HPOTrial or a trial's pod, write a status, add a history record) must neither wedge the
experiment nor change its results; a pod the API server refuses fails its trial.
"""

from __future__ import annotations

import json
import time
import urllib.request
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


def trial(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    found = control_plane.kubectl(
        "get", "hpotrial", name, "-n", namespace, "-o", "json", check=False
    )
    return json.loads(found.stdout) if found.returncode == 0 else None


def event_reasons(control_plane: Any, namespace: str) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for event in get(control_plane, namespace, "events")["items"]:
        reasons.setdefault(event["reason"], []).append(event["message"])
    return reasons


def patch_status(control_plane: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    control_plane.kubectl(
        "patch",
        "hpotrial",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def metric(operator: OperatorProcess, name: str) -> float:
    with urllib.request.urlopen(f"{operator.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def started(control_plane: Any, namespace: str, name: str, step: int) -> bool:
    found = trial(control_plane, namespace, name)
    return bool(found and ((found.get("status") or {}).get("step") or 0) >= step)


def test_a_deleted_hpotrial_is_put_back_and_the_experiment_completes(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    # Long enough trials that the garbage collector takes the pod of the deleted
    # HPOTrial before it ends.
    scheduler = {"name": "none", "maxResource": 40}
    document = experiment("owned", max_trials=3, parallel=2, scheduler=scheduler, sleep=0.5)
    apply(control_plane, namespace, document)
    wait_for("owned-0 to report", lambda: started(control_plane, namespace, "owned-0", 2), 120)
    old_uid = trial(control_plane, namespace, "owned-0")["metadata"]["uid"]  # type: ignore[index]
    control_plane.kubectl("delete", "hpotrial", "owned-0", "-n", namespace, "--wait=false")

    def put_back() -> bool:
        found = trial(control_plane, namespace, "owned-0")
        return bool(found and found["metadata"]["uid"] != old_uid and found.get("status"))

    wait_for("owned-0 to be put back", put_back, 60, operator.log_tail)
    done = wait_finished(control_plane, namespace, "owned", operator, 240)
    assert done["phase"] == "Succeeded", done
    assert done["trialsFailed"] == 0 and done["trialsTotal"] == 3
    restored = trial(control_plane, namespace, "owned-0")["status"]  # type: ignore[index]
    # Its history came back whole: the reports before the deletion are there.
    reports = [r for r in restored["history"] if r["type"] == "Reported"]
    assert reports and reports[0]["attempt"] == 1 and reports[0]["step"] == 1
    # Its pod went with the old object: an interruption, resumed.
    assert restored["phase"] == "Completed" and restored["interruptions"] >= 1, restored
    assert "TrialRestored" in event_reasons(control_plane, namespace)

    # A restarted operator loads it as it is.
    before = {t["metadata"]["name"]: t["status"] for t in trials(control_plane, namespace)}
    operator.kill()
    # And one deleted while the operator is down, history and all, is planned again.
    control_plane.kubectl("delete", "hpotrial", "owned-1", "-n", namespace)
    operator.start()
    wait_for(
        "owned-1 to be made again",
        lambda: trial(control_plane, namespace, "owned-1"),
        90,
        operator.log_tail,
    )
    time.sleep(3)
    after = status(control_plane, namespace, "owned")
    assert after["phase"] == "Succeeded" and after["reason"] != "HistoryUnreadable", after
    again = {t["metadata"]["name"]: t["status"] for t in trials(control_plane, namespace)}
    assert again["owned-0"]["history"] == before["owned-0"]["history"]
    assert again["owned-2"] == before["owned-2"]
    # The experiment had ended: the trial planned again does not run.
    assert again["owned-1"]["phase"] == "Stopped"
    reasons = event_reasons(control_plane, namespace)
    assert "TrialReplanned" in reasons
    # Loading compares the stored statuses with the engine's exactly: none was rewritten.
    assert "StatusRestored" not in reasons, reasons["StatusRestored"]
    assert "Traceback" not in operator.log_tail(400)


def test_a_pod_orphaned_with_its_hpotrial_does_not_outlive_the_experiment(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    scheduler = {"name": "none", "maxResource": 40}
    document = experiment("orphan", max_trials=2, parallel=2, scheduler=scheduler, sleep=0.5)
    apply(control_plane, namespace, document)
    wait_for("orphan-0 to report", lambda: started(control_plane, namespace, "orphan-0", 2), 120)
    old_uid = trial(control_plane, namespace, "orphan-0")["metadata"]["uid"]  # type: ignore[index]
    # The pod keeps running with no owner at all; the HPOTrial put back does not own it.
    control_plane.kubectl("delete", "hpotrial", "orphan-0", "-n", namespace, "--cascade=orphan")

    def unowned() -> list[str]:
        pods = get(control_plane, namespace, "pods")["items"]
        return [p["metadata"]["name"] for p in pods if not p["metadata"].get("ownerReferences")]

    def settled() -> bool:
        found = trial(control_plane, namespace, "orphan-0")
        return bool(found and found["metadata"]["uid"] != old_uid and not unowned())

    wait_for("the orphaned pod to be dealt with", settled, 60, operator.log_tail)
    assert "OrphanedPodDeleted" in event_reasons(control_plane, namespace)
    done = wait_finished(control_plane, namespace, "orphan", operator, 240)
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    restored = trial(control_plane, namespace, "orphan-0")["status"]  # type: ignore[index]
    assert restored["interruptions"] >= 1, restored  # its attempt resumed in a new pod


def test_statuses_written_by_others_are_put_back(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    document = experiment("forged", max_trials=2, parallel=2)
    apply(control_plane, namespace, document)
    done = wait_finished(control_plane, namespace, "forged", operator)
    assert done["phase"] == "Succeeded", done
    best = done["bestValue"]
    real = trial(control_plane, namespace, "forged-1")["status"]  # type: ignore[index]

    # A status written by someone with hpotrials/status rights is put back.
    # Keys the operator never writes are taken away too (a merge patch would keep them).
    forged_ready = {"type": "Ready", "status": "True", "reason": "Forged"}
    forged = {"value": -999, "phase": "Failed", "conditions": [forged_ready]}
    patch_status(control_plane, namespace, "forged-1", forged)

    def put_back() -> bool:
        found = trial(control_plane, namespace, "forged-1")["status"]  # type: ignore[index]
        return found["value"] == real["value"] and found["phase"] == real["phase"]

    wait_for("forged-1's status to be put back", put_back, 30, operator.log_tail)
    assert trial(control_plane, namespace, "forged-1")["status"] == real  # type: ignore[index]
    assert "StatusRestored" in event_reasons(control_plane, namespace)
    # The experiment's too.
    control_plane.kubectl(
        "patch",
        "hpoexperiment",
        "forged",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "bestValue": -999,
                    "bestTrial": "forged-7",
                    "studyAttrs": {"forged": 1},
                    "bestParams": {"forged": 1},
                    "forgedKey": "x",
                }
            }
        ),
    )
    wait_for(
        "the experiment's status to be put back",
        lambda: status(control_plane, namespace, "forged").get("bestValue") == best,
        30,
        operator.log_tail,
    )
    restored = status(control_plane, namespace, "forged")
    assert "forged" not in (restored.get("studyAttrs") or {}), restored
    assert "forged" not in restored["bestParams"] and "forgedKey" not in restored, restored


def test_history_records_written_by_others_are_refused(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("forged", max_trials=2, parallel=2))
    done = wait_finished(control_plane, namespace, "forged", operator)
    assert done["phase"] == "Succeeded", done
    best = done["bestValue"]
    real = trial(control_plane, namespace, "forged-1")["status"]  # type: ignore[index]

    # A history record added while the operator is down is refused when it loads.
    operator.stop()
    last = max(r["seq"] for t in trials(control_plane, namespace) for r in t["status"]["history"])
    attempt = real["attempt"]
    forged_record = {
        "seq": last + 1,
        "type": "Reported",
        "number": 1,
        "attempt": attempt,
        "step": 99,
        "metrics": {"loss": -100.0},
        "verdict": {"decision": "continue", "reason": ""},
        "at": time.time(),
        "mac": "0" * 32,
    }
    forged_history = [*real["history"], forged_record]
    patch_status(control_plane, namespace, "forged-1", {"history": forged_history, "value": -100})
    operator.start()

    def clean() -> bool:
        found = trial(control_plane, namespace, "forged-1")["status"]  # type: ignore[index]
        return found["history"] == real["history"] and found["value"] == real["value"]

    wait_for("the forged record to be dropped", clean, 90, operator.log_tail)
    after = status(control_plane, namespace, "forged")
    assert after["phase"] == "Succeeded" and after["bestValue"] == best, after
    refused = event_reasons(control_plane, namespace).get("HistoryRecordRefused", [])
    assert refused and "1 of forged-1" in refused[0], refused
    assert metric(operator, "kubetune_history_records_refused_total") == 1

    # Records taken away (no MAC protects against that) leave a history that cannot be
    # replayed: the experiment fails, saying why; the operator goes on.
    operator.stop()
    first = trial(control_plane, namespace, "forged-0")["status"]  # type: ignore[index]
    holed = [r for r in first["history"] if r["type"] != "TrialLaunched"]
    patch_status(control_plane, namespace, "forged-0", {"history": holed})
    operator.start()
    failed = wait_for(
        "the experiment to fail",
        lambda: (
            status(control_plane, namespace, "forged").get("reason") == "HistoryUnreadable"
            and status(control_plane, namespace, "forged")
        ),
        90,
        operator.log_tail,
    )
    assert failed["phase"] == "Failed" and "cannot be replayed" in failed["message"]
    condition = next(c for c in failed["conditions"] if c["type"] == "Failed")
    assert condition["status"] == "True" and condition["reason"] == "HistoryUnreadable"
    assert "HistoryUnreadable" in event_reasons(control_plane, namespace)
    assert "Traceback" not in operator.log_tail(200)


def test_signed_history_records_deleted_are_noticed(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("holed", max_trials=2, parallel=2))
    done = wait_finished(control_plane, namespace, "holed", operator)
    assert done["phase"] == "Succeeded", done
    operator.stop()
    # Every record left keeps its valid MAC: only the hole in the numbers shows.
    history = trial(control_plane, namespace, "holed-0")["status"]["history"]  # type: ignore[index]
    last = [r for r in history if r["type"] == "Reported"][-1]
    holed = [r for r in history if r is not last]
    patch_status(control_plane, namespace, "holed-0", {"history": holed})
    operator.start()
    missing = wait_for(
        "the missing record to be told",
        lambda: event_reasons(control_plane, namespace).get("HistoryRecordsMissing"),
        90,
        operator.log_tail,
    )
    assert f"sequence numbers {last['seq']})" in missing[0], missing
    assert metric(operator, "kubetune_history_records_missing_total") == 1
    assert "Traceback" not in operator.log_tail(200)


def test_a_history_stripped_of_every_mac_is_refused_not_signed_anew(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("stripped", max_trials=2, parallel=2))
    done = wait_finished(control_plane, namespace, "stripped", operator)
    assert done["phase"] == "Succeeded", done
    operator.stop()
    # Every MAC taken away, values forged: it would pass for v0.1.0's unsigned history.
    for found in trials(control_plane, namespace):
        history = [{**r, "mac": None} for r in found["status"]["history"]]
        for record in history:
            if record["type"] == "Reported":
                record["metrics"] = {"loss": -100.0}
        patch_status(control_plane, namespace, found["metadata"]["name"], {"history": history})
    control_plane.kubectl(
        "patch",
        "hpoexperiment",
        "stripped",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"history": [{**r, "mac": None} for r in done["history"]]}}),
    )
    operator.start()
    failed = wait_for(
        "the experiment to fail",
        lambda: (
            status(control_plane, namespace, "stripped").get("reason") == "HistoryUnreadable"
            and status(control_plane, namespace, "stripped")
        ),
        90,
        operator.log_tail,
    )
    assert "every history record was refused" in failed["message"], failed
    assert "HistoryRecordRefused" in event_reasons(control_plane, namespace)
    assert metric(operator, "kubetune_history_records_refused_total") > 0
    for found in trials(control_plane, namespace):
        assert all("mac" not in r for r in found["status"]["history"])  # never signed anew


def test_a_name_held_by_someone_else_s_object_fails_its_trial_and_is_left_alone(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    # A user makes trial 0's first pod before the operator does: it was taken as the
    # trial's own (its outcome recorded as the trial's), and it outlived the experiment.
    squatter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "squat-0-a1", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(squatter))
    apply(control_plane, namespace, experiment("squat", max_trials=2, parallel=2))
    done = wait_finished(control_plane, namespace, "squat", operator)
    first = trial(control_plane, namespace, "squat-0")["status"]  # type: ignore[index]
    assert first["phase"] == "Failed" and "Pod squat-0-a1" in first["reason"], first
    assert done["trialsFailed"] == 1 and done["trialsCompleted"] == 1, done
    taken = event_reasons(control_plane, namespace).get("TrialObjectNameTaken", [])
    assert taken and "Pod squat-0-a1" in taken[0], taken
    pod = get(control_plane, namespace, "pod", "squat-0-a1")
    assert "ownerReferences" not in pod["metadata"], pod["metadata"]  # left as it was


def test_a_pod_the_api_server_refuses_fails_its_trial(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    document = experiment("refused", max_trials=2, parallel=1)
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    # Quantities the schema accepts; a pod the API server refuses (request above limit).
    container["resources"] = {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}
    apply(control_plane, namespace, document)
    done = wait_finished(control_plane, namespace, "refused", operator, 120)
    assert done["trialsFailed"] == 2, done
    for found in trials(control_plane, namespace):
        reason = found["status"]["reason"]
        assert found["status"]["phase"] == "Failed"
        assert reason.startswith("pod refused: ") and "must be less than or equal to" in reason
    refusals = event_reasons(control_plane, namespace).get("TrialPodRefused", [])
    assert len(refusals) == 2 and "must be less than or equal to" in refusals[0]
    assert get(control_plane, namespace, "pods")["items"] == []


def test_a_pod_deleted_by_hand_is_an_interruption(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    document = experiment(
        "handdel", max_trials=1, parallel=1, scheduler={"name": "none", "maxResource": 30}
    )
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = [*container["command"][:-1], "--sleep=0.1", "--checkpoint-every-step"]
    apply(control_plane, namespace, document)
    wait_for("a few steps", lambda: started(control_plane, namespace, "handdel-0", 5), 120)
    control_plane.kubectl("delete", "pod", "handdel-0-a1", "-n", namespace, "--wait=false")
    done = wait_finished(control_plane, namespace, "handdel", operator)
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    state = trial(control_plane, namespace, "handdel-0")["status"]  # type: ignore[index]
    assert state["phase"] == "Completed" and state["step"] == 30
    assert state["interruptions"] == 1 and state["attempt"] == 2


def test_a_pod_refused_for_quota_waits_and_is_created_later(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    control_plane.kubectl("create", "quota", "one-pod", "--hard=pods=1", "-n", namespace)
    wait_for(
        "the quota to be counted",
        lambda: (
            control_plane.kubectl(
                "get", "resourcequota", "one-pod", "-n", namespace, "-o", "jsonpath={.status.hard}"
            ).stdout
        ),
        60,
    )
    scheduler = {"name": "none", "maxResource": 5}
    apply(
        control_plane, namespace, experiment("quota", max_trials=2, parallel=2, scheduler=scheduler)
    )
    done = wait_finished(control_plane, namespace, "quota", operator)
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    assert done["trialsCompleted"] == 2
    waits = event_reasons(control_plane, namespace).get("TrialWaitingForQuota", [])
    assert waits and "exceeded quota" in waits[0], waits
