"""A careless admin and a hostile user against a distributed trial's objects on the real
control plane: an HPOTrial deleted with `--cascade=orphan` while its gang runs, and a
Service that someone else made under a trial's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.test_operator import gang_experiment, pods_by_name, seen
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    apply,
    get,
    trials,
    wait_finished,
    wait_for,
)
from tests.operator.test_durability import status_patches, stored_reports

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def services(control_plane: Any, namespace: str) -> dict[str, dict[str, Any]]:
    return {s["metadata"]["name"]: s for s in get(control_plane, namespace, "services")["items"]}


def reasons(control_plane: Any, namespace: str) -> dict[str, str]:
    events = get(control_plane, namespace, "events")["items"]
    return {e.get("reason", ""): e.get("message", "") for e in events}


def state_of(control_plane: Any, namespace: str) -> str:
    """What the objects say, for a time-out's message."""
    lines = [
        f"hpotrial {t['metadata']['name']} uid={t['metadata']['uid'][:8]} "
        f"finalizers={t['metadata'].get('finalizers')} "
        f"deleting={bool(t['metadata'].get('deletionTimestamp'))} "
        f"status={ {k: v for k, v in (t.get('status') or {}).items() if k != 'history'} }"
        for t in trials(control_plane, namespace)
    ]
    lines += [
        f"pod {n} owners={[r['uid'][:8] for r in p['metadata'].get('ownerReferences') or []]} "
        f"phase={p.get('status', {}).get('phase')}"
        for n, p in pods_by_name(control_plane, namespace).items()
    ]
    lines += [f"event {r}: {m}" for r, m in reasons(control_plane, namespace).items()]
    return "\n".join(lines)


def test_a_gangs_hpotrial_orphan_deleted_resumes_and_a_foreign_service_is_never_adopted(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    """`kubectl delete hpotrial --cascade=orphan` while its gang runs: the garbage
    collector strips the old owner from the pods (deleted by the operator) and from the
    trial's headless Service. The HPOTrial put back (a new UID) must find the Service
    still the experiment's and resume its gang, not fail as TrialObjectNameTaken (it
    did: the Service was owned by the HPOTrial alone). A Service someone else made under
    the second trial's name fails that trial and is left exactly as it was."""
    for _ in range(2):
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    out = tmp_path / "seen"
    document = gang_experiment("orph", out, steps=200, sleep=0.5, max_trials=2)
    document["spec"]["budget"]["parallelTrials"] = 2
    document["spec"]["budget"]["maxFailedTrials"] = 1
    # A script killed by SIGTERM (143), as most are: its deleted pods end as an
    # interruption. (gang_trial.py under the SDK breaks on the PAUSE it is answered
    # after a SIGTERM and exits 0, which reads as the attempt's completion.)
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    script = container["command"][1]
    container["command"] = [
        "python",
        "-c",
        "import os, runpy, signal; "
        "signal.signal(signal.SIGTERM, lambda *_: os._exit(143)); "
        f"runpy.run_path({script!r}, run_name='__main__')",
    ]
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "orph-1", "labels": {"team": "other"}},
        "spec": {"clusterIP": "None", "selector": {"app": "other"}},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(foreign))
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))

    def reported() -> int:
        found = seen(out, "orph-0", 1, 0)
        return max((int(s) for s in (found or {}).get("decisions", {})), default=0)

    wait_for("orph-0's gang to report", lambda: reported() >= 2, 120, operator.log_tail)
    (old,) = [t for t in trials(control_plane, namespace) if t["metadata"]["name"] == "orph-0"]
    # --wait=false: a fresh control plane's garbage collector may take ~30 s to learn the
    # CRD; the trial runs 100 s, long enough for its resumption to be seen.
    control_plane.kubectl(
        "delete", "hpotrial", "orph-0", "-n", namespace, "--cascade=orphan", "--wait=false"
    )

    def resumed_or_failed() -> dict[str, Any] | None:
        by_name = {t["metadata"]["name"]: t for t in trials(control_plane, namespace)}
        found = by_name.get("orph-0")
        if not found or found["metadata"]["uid"] == old["metadata"]["uid"]:
            return None
        state = found.get("status") or {}
        if state.get("phase") == "Failed":
            return found
        if state.get("attempt") != 2:  # its status is written after its pods are made
            return None
        pods = pods_by_name(control_plane, namespace)
        both = all(f"orph-0-a2-r{rank}" in pods for rank in range(2))
        return found if both and "orph-1" in by_name else None

    restored = wait_for(
        "orph-0 put back and resumed",
        resumed_or_failed,
        120,
        lambda: state_of(control_plane, namespace) + operator.log_tail(),
    )
    state = restored["status"]
    assert state["phase"] == "Running" and state["attempt"] == 2, state.get("reason")
    assert state["interruptions"] == 1, state
    found = services(control_plane, namespace)
    owners = {r["uid"] for r in found["orph-0"]["metadata"].get("ownerReferences") or []}
    experiment_uid = get(control_plane, namespace, "hpoexperiment", "orph")["metadata"]["uid"]
    assert experiment_uid in owners, found["orph-0"]  # never left without an owner

    # The foreign Service: orph-1 failed naming it, the Service untouched, no pod made.
    def failed() -> dict[str, Any] | None:
        by_name = {t["metadata"]["name"]: t for t in trials(control_plane, namespace)}
        state = (by_name.get("orph-1") or {}).get("status") or {}
        return state if state.get("phase") == "Failed" else None

    state = wait_for("orph-1 to fail", failed, 30, operator.log_tail)
    assert "Service orph-1 exists" in state["reason"], state
    found = services(control_plane, namespace)
    assert found["orph-1"]["spec"]["selector"] == {"app": "other"}
    assert not found["orph-1"]["metadata"].get("ownerReferences")
    assert not [n for n in pods_by_name(control_plane, namespace) if n.startswith("orph-1-")]
    assert "TrialObjectNameTaken" in reasons(control_plane, namespace)


def test_a_gangs_rank_1_reports_do_not_write_rank_0s_late_reports(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 1 reports each step just after rank 0. Its report records nothing, but it
    flushed rank 0's late report of that step: one HPOTrial write a step, as if late
    writes did not exist (measured: 25 status PATCHes for 24 steps). Now 4."""
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "60")
    operator.stop()
    operator.start()
    for _ in range(2):
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    before = status_patches(control_plane)
    out = tmp_path / "seen"
    apply(control_plane, namespace, gang_experiment("quiet", out, steps=24, sleep=0.2))
    done = wait_finished(control_plane, namespace, "quiet", operator, 120)
    assert done["phase"] == "Succeeded", done
    (trial,) = trials(control_plane, namespace)
    assert trial["status"]["step"] == 24 and (1, 24) in stored_reports(trial)
    written = status_patches(control_plane) - before
    print(f"gang of 2, 24 steps: {written:.0f} HPOTrial status writes")
    assert written <= 8, f"{written:.0f} HPOTrial status writes for 24 steps of a gang"
