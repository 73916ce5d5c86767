"""Gangs on a node pool end to end: the real operator, moto's Auto Scaling group and
process nodes (tests/capacity/test_cluster.py's fixtures). Three two-pod gangs on a pool
of at most four one-GPU nodes: two run, the third waits whole (no pod, an Event saying
why) instead of taking the nodes half a gang at a time, and all complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune.timestamps import parse_rfc3339
from tests.capacity.test_cluster import make_pool, on_pool, operator, proxy  # noqa: F401
from tests.distributed.test_operator import gang_experiment
from tests.operator.conftest import installed  # noqa: F401  (a fixture)
from tests.operator.harness import (
    OperatorProcess,
    apply,
    finished,
    get,
    status,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_three_two_node_gangs_on_four_nodes_never_deadlock(
    control_plane: Any,
    namespace: str,
    make_pool: Any,  # noqa: F811
    operator: OperatorProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    pool = make_pool(max_nodes=4)
    operator.start()
    document = gang_experiment("gangs", tmp_path / "seen", steps=6, sleep=0.5, max_trials=3)
    document["spec"]["budget"]["parallelTrials"] = 3
    apply(control_plane, namespace, on_pool(document, pool))
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "gangs"),
        240,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsTotal"] == 3, done
    # No gang was ever released half-placed, none failed.
    if done["trialsFailed"] or done["interruptions"]:
        print(json.dumps([t["status"] for t in trials(control_plane, namespace)], indent=1))
        print(operator.log_tail(400))
    assert done["trialsFailed"] == 0 and done["interruptions"] == 0, done
    assert pool.cloud.max_nodes <= 4
    events = [
        e
        for e in get(control_plane, namespace, "events")["items"]
        if e.get("reason") == "TrialWaitingForNodes"
    ]
    assert events, "no Event says why a gang waits"
    (waited,) = {e["message"].split()[1] for e in events}
    assert "waits whole" in events[0]["message"] and "node pool" in events[0]["message"]
    pods = get(control_plane, namespace, "pods")["items"]
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for found in pods:
        by_trial.setdefault(found["metadata"]["labels"]["kubetune.dev/trial"], []).append(found)
    assert sorted(len(v) for v in by_trial.values()) == [2, 2, 2], sorted(by_trial)
    # The waiting gang's pods were created only once another gang had ended.
    created = min(parse_rfc3339(p["metadata"]["creationTimestamp"]) or 0 for p in by_trial[waited])
    first_end = min(
        parse_rfc3339(s["state"]["terminated"]["finishedAt"]) or 0
        for name, gang in by_trial.items()
        if name != waited
        for p in gang
        for s in p["status"]["containerStatuses"]
    )
    assert created >= first_end - 1, (created, first_end)
    assert all(t["status"]["phase"] == "Completed" for t in trials(control_plane, namespace))
    # A gang the pool could never hold is refused when the experiment is applied.
    huge = gang_experiment("huge", tmp_path / "huge", steps=1)
    huge["spec"]["workers"] = 5
    apply(control_plane, namespace, on_pool(huge, pool))
    invalid = wait_for(
        "the experiment refused",
        lambda: (s := status(control_plane, namespace, "huge")).get("reason") == "Invalid" and s,
        30,
        operator.log_tail,
    )
    assert "spec.workers" in invalid["message"] and "maxNodes 4" in invalid["message"], invalid
