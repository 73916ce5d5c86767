"""Reclaim notices (operator/notices.py, kubetune/reclaim.py, the SDK's leave.py): a Node's
termination taint makes its trials' next report answer "checkpoint and exit", the SDK
saves that step and exits 143, and the attempt's end is an interruption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubetune.capacity.gangs import GangAdmission
from kubetune.capacity.scaler import PoolScaler
from kubetune.events import ExitKind
from kubetune.operator.notices import NodeNotices, leave_verdict
from kubetune.operator.outcomes import Outcome
from kubetune.reclaim import notice_taint
from kubetune.trials import Decision, TrialPhase, Verdict
from tests.sdk.protocol_server import Fault, ProtocolServer

REPO = Path(__file__).resolve().parents[2]
QUADRATIC = REPO / "tests" / "local" / "trials" / "quadratic.py"
SPOT_ITN = {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}


def node(name: str, *taints: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"taints": list(taints)}}


def test_the_termination_taints_of_nth_and_karpenter_are_notices() -> None:
    assert notice_taint(node("a", SPOT_ITN)) == SPOT_ITN["key"]
    disrupted = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
    assert notice_taint(node("b", {"key": "nvidia.com/gpu"}, disrupted)) == disrupted["key"]
    assert notice_taint(node("c", {"key": "karpenter.sh/disruption"})) is not None
    assert notice_taint(node("d", {"key": "nvidia.com/gpu"})) is None
    assert notice_taint({"metadata": {"name": "e"}}) is None


def test_a_trial_on_a_noticed_node_is_told_to_checkpoint_and_exit() -> None:
    notices = NodeNotices()
    notices.pod_seen("exp-0-1", 0, 1, "node-a", gone=False)
    # A gang: rank 1 of trial 1 on the noticed node, rank 0 elsewhere.
    notices.pod_seen("exp-1-1-r0", 1, 1, "node-b", gone=False)
    notices.pod_seen("exp-1-1-r1", 1, 1, "node-c", gone=False)
    go_on = Verdict.go_on()
    assert notices.answer(0, 1, go_on) == go_on  # no notice yet
    assert notices.node_changed(node("node-c", SPOT_ITN), deleted=False)
    assert notices.answer(0, 1, go_on) == go_on  # another node
    told = notices.answer(1, 1, go_on)
    assert told.decision is Decision.PAUSE and told.checkpoint_and_exit
    assert "node-c" in told.reason and "spot-itn" in told.reason
    # A pause or a stop the scheduler gave stays what it was.
    stop = Verdict(Decision.STOP, "done", TrialPhase.COMPLETED)
    assert notices.answer(1, 1, stop) == stop
    assert leave_verdict(stop, "node-c", "x") is stop
    # The taint removed (a cancelled disruption): the trial goes on.
    notices.node_changed(node("node-c"), deleted=False)
    assert notices.answer(1, 1, go_on) == go_on


def test_the_end_of_an_attempt_told_to_leave_is_an_interruption() -> None:
    notices = NodeNotices()
    notices.pod_seen("exp-0-1", 0, 1, "node-a", gone=False)
    notices.node_changed(node("node-a", SPOT_ITN), deleted=False)
    notices.answer(0, 1, Verdict.go_on())
    for code in (143, 0):  # the SDK's exit, and an older SDK's pause pattern
        ended = notices.outcome(0, 1, "node-a", Outcome(ExitKind.EXITED, code, "Error"))
        assert ended.kind is ExitKind.INTERRUPTED and "node-a" in ended.message
    # Elsewhere, a crash stays a crash.
    crash = Outcome(ExitKind.EXITED, 3, "Error")
    assert notices.outcome(5, 1, "node-z", crash) == crash
    # Told, then its node deleted before the pod's end was seen: still an interruption.
    notices.pod_seen("exp-2-1", 2, 1, "node-q", gone=False)
    notices.node_changed(node("node-q", SPOT_ITN), deleted=False)
    notices.answer(2, 1, Verdict.go_on())
    notices.node_changed(node("node-q"), deleted=True)
    assert notices.outcome(2, 1, "node-q", crash).kind is ExitKind.INTERRUPTED


class _Raw:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.data = json.dumps({"items": items}).encode()


class _Core:
    def list_pod_for_all_namespaces(self, **_: Any) -> _Raw:
        return _Raw([])


def test_the_capacity_loop_counts_no_room_on_a_noticed_node() -> None:
    scaler = PoolScaler(_Core(), None, time.time, None, GangAdmission())  # type: ignore[arg-type]
    nodes = [node("a", SPOT_ITN), node("b")]
    for item in nodes:
        item["status"] = {
            "allocatable": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    observed = asyncio.run(scaler.observe_nodes(nodes))
    assert [n.unschedulable for n in observed] == [True, False]


# ----- the SDK ---------------------------------------------------------------------------


@pytest.fixture
def sdk_env(server: ProtocolServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")}
    env.update(
        {
            "PYTHONPATH": str(REPO / "trial_image"),
            "KUBETUNE_EXPERIMENT": "exp",
            "KUBETUNE_TRIAL": "exp-0",
            "KUBETUNE_ATTEMPT": "1",
            "KUBETUNE_ENDPOINT": server.url,
            "KUBETUNE_TOKEN": "tok-exp-0-0123456789abcdef",
            "KUBETUNE_PARAMS": '{"x": 0.1, "y": 0.2}',
            "KUBETUNE_MAX_RESOURCE": "30",
            "KUBETUNE_CHECKPOINT_URI": (tmp_path / "ckpt").as_uri(),
            "KUBETUNE_REPORT_BACKOFF": "0.01",
            "KUBETUNE_REPORT_TIMEOUT": "10",
        }
    )
    return env


@pytest.fixture
def server() -> Any:
    srv = ProtocolServer().start()
    srv.add_trial("exp-0", "tok-exp-0-0123456789abcdef")
    yield srv
    srv.stop()


def _latest(tmp_path: Path) -> str:
    return (tmp_path / "ckpt" / "latest").read_text()


def test_the_sdk_checkpoints_the_step_and_exits_143_when_told(
    server: ProtocolServer, sdk_env: dict[str, str], tmp_path: Path
) -> None:
    told = {"decision": "pause", "reason": "node n reclaimed", "checkpointAndExit": True}
    server.faults = [Fault(), Fault(), Fault(status=200, body=told)]  # step 3's answer
    done = subprocess.run(
        [sys.executable, str(QUADRATIC), "--sleep=0"], env=sdk_env, capture_output=True, timeout=60
    )
    assert done.returncode == 143, done.stderr.decode()[-2000:]
    assert _latest(tmp_path) == "step-00000003.ckpt"
    assert (tmp_path / "ckpt" / "step-00000003.ckpt").read_bytes() == b"3"


def test_a_rank_of_a_distributed_trial_exits_143_once_its_shard_is_saved(
    server: ProtocolServer, sdk_env: dict[str, str], tmp_path: Path
) -> None:
    """Each rank of a gang is told at its own report and leaves once its own shard of the
    step is saved (the shard path returned early, and the rank trained on)."""
    told = {"decision": "pause", "reason": "node n reclaimed", "checkpointAndExit": True}
    server.faults = [Fault(), Fault(), Fault(status=200, body=told)]
    rank_env = {**sdk_env, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    rank_env.update({"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})
    done = subprocess.run(
        [sys.executable, str(QUADRATIC), "--sleep=0"], env=rank_env, capture_output=True, timeout=60
    )
    assert done.returncode == 143, done.stderr.decode()[-2000:]
    assert (tmp_path / "ckpt" / "rank-1" / "step-00000003.ckpt").read_bytes() == b"3"


def test_the_sdk_leaves_at_the_next_report_after_sigterm(
    server: ProtocolServer, sdk_env: dict[str, str], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, str(QUADRATIC), "--sleep=0.3"],
        env=sdk_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while len(server.reports()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr.decode()[-2000:]
    steps = [r["step"] for r in server.reports()]
    # The step reported after the signal is the one saved: nothing trained is lost.
    assert _latest(tmp_path) == f"step-{steps[-1]:08d}.ckpt"
    assert steps[-1] <= 4


def test_a_registered_checkpointer_saves_without_the_pause_pattern(
    server: ProtocolServer, sdk_env: dict[str, str], tmp_path: Path
) -> None:
    script = (
        "import kubetune_trial as kt\n"
        "kt.set_checkpointer(lambda step: f'state {step}'.encode())\n"
        "for step in range(1, 31):\n"
        "    kt.report(step, loss=1.0 / step)\n"
        "raise SystemExit(0)\n"
    )
    told = {"decision": "pause", "reason": "node n reclaimed", "checkpointAndExit": True}
    server.faults = [Fault(), Fault(status=200, body=told)]
    done = subprocess.run(
        [sys.executable, "-c", script], env=sdk_env, capture_output=True, timeout=60
    )
    assert done.returncode == 143, done.stderr.decode()[-2000:]
    assert (tmp_path / "ckpt" / "step-00000002.ckpt").read_bytes() == b"state 2"


def test_an_empty_node_being_reclaimed_is_removed_at_once() -> None:
    from kubetune.capacity.pools import NodePool
    from kubetune.capacity.scaling import GroupState, Instance, PoolNode, plan

    pool = NodePool.model_validate(
        {
            "name": "gpu",
            "provider": {"type": "aws-asg", "autoScalingGroupName": "g"},
            "region": "us-east-1",
            "instanceTypes": ["g5.xlarge"],
            "gpusPerNode": 1,
            "maxNodes": 4,
            "nodeLabels": {"pool": "gpu"},
            "scaleDownGraceSeconds": 300,
        }
    )
    group = GroupState(2, 0, 4, [Instance("i-1"), Instance("i-2")])
    nodes = [
        PoolNode("a", "i-1", 1, unschedulable=True, reclaiming=True),
        PoolNode("b", "i-2", 1, 1, busy=True),
    ]
    decided = plan(pool, group, nodes, [], 100.0, {"a": 99.0})
    # Within the grace period, yet terminated (and the group's desired size lowered
    # with it): it bills until AWS takes it, and the group would replace it.
    assert [r.instance_id for r in decided.remove] == ["i-1"]
    calm = [PoolNode("a", "i-1", 1), nodes[1]]
    assert plan(pool, group, calm, [], 100.0, {"a": 99.0}).remove == ()
