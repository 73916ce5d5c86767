"""Trial tokens reach their pods through one Secret per block of trials
(operator/tokensecrets.py), created once, and again only if someone deletes it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from kubetune.names import TOKENS_PER_SECRET
from kubetune.tokens import TokenAuthority, experiment_scope
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    api_requests,
    apply,
    experiment,
    finished,
    get,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_one_secret_carries_a_blocks_tokens_and_is_made_again_if_deleted(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    """Trials pause at rungs and resume (attempts 2 and 3), and the block's Secret is
    deleted by hand after the first report: the next pod waits for it
    (CreateContainerConfigError), the operator makes it again, and the experiment ends
    with every trial's reports taken. Two Secret creations in all: before, every
    attempt created its trial's Secret (a resumed one's answered "exists")."""
    process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    before = api_requests(control_plane, "secrets", "POST")
    apply(control_plane, namespace, experiment("blocks", max_trials=3, parallel=1, sleep=0.2))
    block = "blocks-kubetune-tokens-0"
    wait_for(
        "a first report",
        lambda: any((t.get("status") or {}).get("step") for t in trials(control_plane, namespace)),
        120,
        operator.log_tail,
    )
    control_plane.kubectl("delete", "secret", "-n", namespace, block, "--wait=true")
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "blocks"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    listed = trials(control_plane, namespace)
    assert max(t["status"]["attempt"] for t in listed) >= 2  # resumed attempts ran
    assert all(t["status"].get("step") for t in listed)  # every trial reported
    waited = [
        e
        for e in get(control_plane, namespace, "events")["items"]
        if "CreateContainerConfigError" in json.dumps(e) or block in (e.get("message") or "")
    ]
    secrets = get(control_plane, namespace, "secrets")["items"]
    ours = [s for s in secrets if s["metadata"]["name"].startswith("blocks-")]
    assert [s["metadata"]["name"] for s in ours] == [block], (ours, waited)
    (secret,) = ours
    experiment_uid = get(control_plane, namespace, "hpoexperiment", "blocks")["metadata"]["uid"]
    key = operator.key_file.read_bytes().strip()
    tokens = TokenAuthority(key, experiment_scope(namespace, "blocks", experiment_uid))
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        f"blocks-{n}": tokens.token_for(f"blocks-{n}") for n in range(TOKENS_PER_SECRET)
    }
    owners = {(r["kind"], r.get("controller")) for r in secret["metadata"]["ownerReferences"]}
    assert owners == {("HPOTrial", True), ("HPOExperiment", False)}
    assert api_requests(control_plane, "secrets", "POST") - before == 2
