"""The operator end to end, on the real control plane.

`kubectl apply -k manifests/` installs CRDs and RBAC; the operator runs as the
manifests' ServiceAccount; trial pods run the real trial code and SDK on process nodes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubetune.tokens import TokenAuthority, experiment_scope
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    REPO,
    OperatorProcess,
    apply,
    experiment,
    finished,
    get,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_an_experiment_runs_to_completion(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("quad", max_trials=6, parallel=2))
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "quad"),
        240,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    assert done["trialsDone"] == 6 and done["trialsTotal"] == 6
    assert done["bestTrial"].startswith("quad-") and done["bestValue"] > 0
    conditions = {c["type"]: c for c in done["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Running"]["status"] == "False"
    listed = trials(control_plane, namespace)
    assert sorted(t["metadata"]["name"] for t in listed) == [f"quad-{n}" for n in range(6)]
    best = next(t for t in listed if t["metadata"]["name"] == done["bestTrial"])
    assert best["status"]["value"] == pytest.approx(done["bestValue"])
    assert all(t["status"]["phase"] in ("Completed", "Stopped") for t in listed)
    assert all(t["status"]["node"] for t in listed)
    table = control_plane.kubectl("get", "hpoexperiments", "-n", namespace).stdout
    assert "Succeeded" in table and "quad" in table
    reasons = {e["reason"] for e in get(control_plane, namespace, "events")["items"]}
    assert {"TrialStarted", "ExperimentSucceeded"} <= reasons


def test_operator_killed_three_times_loses_nothing(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    process_node_factory(gpus=3, taints=GPU_NODE_TAINTS)
    checkpoints = (tmp_path / "ckpt").as_uri()
    document = experiment("crashy", max_trials=9, parallel=3, checkpoints=checkpoints, sleep=0.3)
    apply(control_plane, namespace, document)
    for kill in range(3):
        wait_for(
            f"progress before kill {kill + 1}",
            lambda k=kill: (
                sum(
                    t["status"].get("phase") in ("Completed", "Stopped", "Paused")
                    for t in trials(control_plane, namespace)
                    if t.get("status")
                )
                >= 2 * (k + 1)
            ),
            180,
            operator.log_tail,
        )
        operator.kill()
        time.sleep(1.0)
        operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "crashy"),
        300,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    listed = trials(control_plane, namespace)
    assert len(listed) == 9 == done["trialsTotal"]
    for trial in listed:
        state = trial["status"]
        history = state["history"]
        reports = [r for r in history if r["type"] == "Reported"]
        assert reports, f"{trial['metadata']['name']} lost its reports"
        assert state["value"] == pytest.approx(reports[-1]["metrics"]["loss"])
        launches = [(r["attempt"]) for r in history if r["type"] == "TrialLaunched"]
        assert launches == list(range(1, len(launches) + 1)), "an attempt was launched twice"
    pods = get(control_plane, namespace, "pods")["items"]
    names = [p["metadata"]["name"] for p in pods]
    assert len(names) == len(set(names))


def test_an_evicted_trial_resumes_from_its_checkpoint(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    node = process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    checkpoints = (tmp_path / "ckpt").as_uri()
    document = experiment(
        "evict",
        max_trials=1,
        parallel=1,
        checkpoints=checkpoints,
        scheduler={"name": "none", "maxResource": 40},
        sleep=0.1,
    )
    # The quadratic trial checkpoints only when paused; make it checkpoint every step.
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"].append("--checkpoint-every-step")
    apply(control_plane, namespace, document)

    def step_reported() -> int:
        listed = trials(control_plane, namespace)
        return listed[0]["status"].get("step") or 0 if listed and listed[0].get("status") else 0

    wait_for("a few steps", lambda: step_reported() >= 5, 120, operator.log_tail)
    node.evict(namespace, "evict-0-a1")
    done = wait_for(
        "the experiment to finish", lambda: finished(control_plane, namespace, "evict"), 180
    )
    assert done["phase"] == "Succeeded", done
    trial = trials(control_plane, namespace)[0]["status"]
    assert trial["interruptions"] == 1 and trial["attempt"] == 2
    assert trial["phase"] == "Completed" and trial["step"] == 40
    second = [r["step"] for r in trial["history"] if r["type"] == "Reported" and r["attempt"] == 2]
    first = [r["step"] for r in trial["history"] if r["type"] == "Reported" and r["attempt"] == 1]
    # Resumed from a checkpoint: the second attempt starts after step 1, near where the first
    # stopped, rather than from scratch.
    assert 1 < min(second) <= max(first) + 1
    assert done["trialsFailed"] == 0


def post(url: str, body: Any, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_forged_reports_are_refused_and_change_nothing(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    apply(control_plane, namespace, experiment("guarded", max_trials=2, parallel=2, sleep=2.0))
    wait_for(
        "two running trials",
        lambda: len([t for t in trials(control_plane, namespace) if t.get("status")]) == 2,
        120,
        operator.log_tail,
    )
    before = {
        t["metadata"]["name"]: t["status"]["history"] for t in trials(control_plane, namespace)
    }
    url = f"{operator.endpoint}/ns/{namespace}/exp/guarded/v1/reports"
    key = operator.key_file.read_bytes().strip()
    uid = get(control_plane, namespace, "hpoexperiment", "guarded")["metadata"]["uid"]
    authority = TokenAuthority(key, experiment_scope(namespace, "guarded", uid))
    report = {"trial": "guarded-0", "attempt": 1, "step": 1, "metrics": {"loss": -100.0}}
    other_scope = TokenAuthority(key, experiment_scope("elsewhere", "guarded", uid))
    # An experiment of the same name created before (another UID) had other tokens.
    recreated = TokenAuthority(key, experiment_scope(namespace, "guarded", "an-older-uid"))
    assert post(url, report, recreated.token_for("guarded-0"))[0] == 401
    assert post(url, report, None)[0] == 401
    assert post(url, report, "0" * 64)[0] == 401
    assert post(url, report, other_scope.token_for("guarded-0"))[0] == 401
    status_code, body = post(url, report, authority.token_for("guarded-1"))
    assert status_code == 403, body
    wrong_place = f"{operator.endpoint}/ns/{namespace}/exp/nope/v1/reports"
    assert post(wrong_place, report, authority.token_for("guarded-0"))[0] == 401
    stale = {**report, "attempt": 7}
    assert post(url, stale, authority.token_for("guarded-0"))[0] == 409
    after = {
        t["metadata"]["name"]: t["status"]["history"] for t in trials(control_plane, namespace)
    }
    for name, history in before.items():
        assert after[name][: len(history)] == history
        assert all(r.get("metrics", {}).get("loss") != -100.0 for r in after[name])


def test_log_line_trials_without_the_sdk(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    """`epoch=N loss=...` lines are read from the pods' logs; a pause stops the pod."""
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    command = ["python", str(REPO / "tests/local/trials/loglines.py")]
    scheduler = {"name": "asha", "resource": "epoch", "minResource": 1, "maxResource": 5}
    document = experiment("lines", command=command, max_trials=4, parallel=2, scheduler=scheduler)
    apply(control_plane, namespace, document)
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "lines"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    listed = {t["metadata"]["name"]: t["status"] for t in trials(control_plane, namespace)}
    best = listed[done["bestTrial"]]
    x = next(
        t for t in trials(control_plane, namespace) if t["metadata"]["name"] == done["bestTrial"]
    )
    assert best["value"] == pytest.approx((x["spec"]["params"]["x"] - 0.3) ** 2 + 1 / best["step"])
    paused_at_rung = [
        s
        for s in listed.values()
        if s["history"]
        and any(
            r["type"] == "Reported" and r["verdict"]["decision"] == "pause" for r in s["history"]
        )
    ]
    assert paused_at_rung, "ASHA never paused a log-line trial"
    assert all(s["phase"] in ("Completed", "Stopped") for s in listed.values())


def test_a_restarted_operator_does_not_follow_the_logs_of_trials_that_use_the_sdk(
    control_plane: Any, namespace: str, operator: OperatorProcess, process_node_factory: Any
) -> None:
    """Before its first SDK report a pod's log is followed for `name=value` lines; after
    it, not, and a restarted operator knows that from status.sdkAttempt instead of
    opening one log stream through the API server per running pod again."""
    node = process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    scheduler = {"name": "none", "resource": "step", "maxResource": 12}
    document = experiment("quiet", max_trials=1, parallel=1, scheduler=scheduler, sleep=1.0)
    apply(control_plane, namespace, document)

    def status() -> dict[str, Any]:
        listed = trials(control_plane, namespace)
        return (listed[0].get("status") or {}) if listed else {}

    wait_for(
        "SDK reports, written",
        lambda: (status().get("step") or 0) >= 2 and status().get("sdkAttempt") == 1,
        120,
        lambda: f"{operator.log_tail()}\n{status()}",
    )
    pod = status()["pod"]
    assert node.log_requests[pod] >= 1  # followed until the first report
    before = node.log_requests[pod]
    operator.kill()
    operator.start()
    step = status()["step"]
    wait_for(
        "reports answered by the restarted operator",
        lambda: (status().get("step") or 0) >= step + 2,
        120,
        operator.log_tail,
    )
    assert node.log_requests[pod] == before
    done = wait_for("the end", lambda: finished(control_plane, namespace, "quiet"), 120)
    assert done["phase"] == "Succeeded", done
    assert status()["sdkAttempt"] == 1
    # The restarted operator read its own status back as its own (no foreign write seen).
    reasons = {e["reason"] for e in get(control_plane, namespace, "events")["items"]}
    assert "StatusRestored" not in reasons
