"""A spot reclaim notice end to end: the real operator on the real control plane, a node
pool on moto, process nodes running the SDK's trial. The Node gets
aws-node-termination-handler's taint; the trial checkpoints at its next report and exits;
the Node is then deleted (the reclaim); the trial resumes on new capacity from the step
it saved (no step lost, where without the notice it would start over: its script
checkpoints only when told to pause) and completes."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.capacity.test_cluster import (  # noqa: F401  (fixtures)
    installed,
    make_pool,
    on_pool,
    operator,
    proxy,
)
from tests.operator.harness import OperatorProcess, apply, experiment, finished, get, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SPOT_ITN = {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}


@pytest.mark.timeout(300)
def test_a_reclaim_notice_makes_the_trial_checkpoint_and_resume_without_losing_a_step(
    control_plane: Any,
    namespace: str,
    make_pool: Any,  # noqa: F811
    operator: OperatorProcess,  # noqa: F811
    tmp_path: Path,
) -> None:
    pool = make_pool(max_nodes=2)
    operator.start()
    document = experiment(
        "notice",
        max_trials=1,
        parallel=1,
        checkpoints=(tmp_path / "ckpt").as_uri(),
        scheduler={"name": "none", "maxResource": 24},
        sleep=0.4,
    )
    apply(control_plane, namespace, on_pool(document, pool))

    def trial() -> dict[str, Any]:
        for item in get(control_plane, namespace, "hpotrials")["items"]:
            if item["metadata"]["name"] == "notice-0":
                return item.get("status") or {}
        return {}

    def reported(attempt: int) -> list[int]:
        history = trial().get("history") or []
        return [r["step"] for r in history if r["type"] == "Reported" and r["attempt"] == attempt]

    wait_for(
        "the trial a few steps in", lambda: (trial().get("step") or 0) >= 4, 120, operator.log_tail
    )
    victim = trial()["node"]
    taints = pool.core.read_node(victim).spec.taints or []
    body = [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints] + [SPOT_ITN]
    pool.core.patch_node(victim, {"spec": {"taints": body}})
    # The next report answers "checkpoint and exit": the attempt ends as an interruption
    # while its node is still there.
    wait_for(
        "the attempt to end after the notice",
        lambda: (trial().get("interruptions") or 0) >= 1,
        60,
        operator.log_tail,
    )
    assert victim in pool.nodes()
    first = reported(1)
    saved = sorted((tmp_path / "ckpt").rglob("step-*.ckpt"))
    assert saved and saved[-1].name == f"step-{max(first):08d}.ckpt", (saved, first)
    pool.cloud.interrupt(victim)  # the reclaim itself, two minutes later in real life
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "notice"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    assert done["trialsFailed"] == 0, done
    state = trial()
    assert state["phase"] == "Completed" and state["node"] != victim, state
    # Resumed from the step it saved on notice: not one step trained twice or skipped.
    # (Seldom the harness's node lifecycle controller rewrites the Node's taints from a
    # stale copy and drops the notice: the next attempt lands on the victim again, and
    # leaves on SIGTERM when it is deleted, saving its step the same way.)
    attempts = range(1, state["attempt"] + 1)
    for before, after in pairwise(attempts):
        assert min(reported(after)) == max(reported(before)) + 1, (before, after)
    assert state["interruptions"] == state["attempt"] - 1 >= 1, state
    assert max(reported(state["attempt"])) == 24
