"""Distributed trials on the real control plane: the operator runs each attempt as a gang
of pods (operator/gang.py), one rank per process node, with the real SDK and the test
rank script (gang_trial.py, no torch): gangs complete, a crashing rank fails the attempt
and stops the other, a reclaimed node interrupts the whole gang, which resumes from the
last complete checkpoint, and a SIGKILLed operator makes no second gang."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
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
from tests.prereq import require_module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = Path(__file__).resolve().parent


def gang_experiment(
    name: str, out: Path, steps: int, sleep: float = 0.05, fault: str = "", max_trials: int = 1
) -> dict[str, Any]:
    document = experiment(
        name,
        command=["python", str(HERE / "gang_trial.py")],
        max_trials=max_trials,
        parallel=1,
        scheduler={"name": "none"},
    )
    spec = document["spec"]
    spec["workers"] = 2
    spec["parameters"] = [{"name": "lr", "type": "float", "min": 0.01, "max": 0.5}]
    spec["algorithm"] = {"name": "random", "seed": 3}
    spec["budget"]["maxFailedTrials"] = 0
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "GANG_OUT", "value": str(out)},
        {"name": "GANG_STEPS", "value": str(steps)},
        {"name": "GANG_SLEEP", "value": str(sleep)},
        {"name": "GANG_FAULT", "value": fault},
    ]
    out.mkdir(parents=True, exist_ok=True)
    return document


def seen(out: Path, trial: str, attempt: int, rank: int) -> dict[str, Any] | None:
    path = out / f"{trial}.a{attempt}.r{rank}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pods_by_name(control_plane: Any, namespace: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in get(control_plane, namespace, "pods")["items"]}


def test_a_two_worker_experiment_runs_each_attempt_as_one_gang(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    for _ in range(2):  # one GPU each: the two ranks of a gang run on two nodes
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    out = tmp_path / "seen"
    document = gang_experiment("gang", out, steps=3, max_trials=2)
    document["spec"]["workers"] = 0
    with pytest.raises(subprocess.CalledProcessError) as refused:
        apply(control_plane, namespace, document)
    assert "spec.workers" in (refused.value.stderr or ""), refused.value.stderr
    document["spec"]["workers"] = 2
    apply(control_plane, namespace, document)
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "gang"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsTotal"] == 2, done
    assert done["trialsFailed"] == 0, done
    pods = pods_by_name(control_plane, namespace)
    services = {
        s["metadata"]["name"]: s for s in get(control_plane, namespace, "services")["items"]
    }
    for trial in trials(control_plane, namespace):
        name, uid = trial["metadata"]["name"], trial["metadata"]["uid"]
        assert trial["status"]["phase"] == "Completed" and trial["status"]["step"] == 3
        assert trial["status"]["pod"] == f"{name}-a1-r0"  # rank 0 stands for the trial
        # Rank 0's loss counts (the others report 1000).
        assert trial["status"]["value"] < 1.0, trial["status"]
        ranks = [pods[f"{name}-a1-r{rank}"] for rank in range(2)]
        assert sorted(n for n in pods if n.startswith(f"{name}-")) == [
            f"{name}-a1-r0",
            f"{name}-a1-r1",
        ]
        assert {p["spec"]["nodeName"] for p in ranks} and len(
            {p["spec"]["nodeName"] for p in ranks}
        ) == 2
        for rank, pod in enumerate(ranks):
            assert pod["spec"]["hostname"] == f"{name}-a1-r{rank}"
            assert pod["spec"]["subdomain"] == name
            assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
            found = seen(out, name, 1, rank)
            assert found is not None, rank
            assert found["env"] == {
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": f"{name}-a1-r0.{name}.{namespace}.svc",
                "MASTER_PORT": "29500",
            }
        # Every rank got rank 0's decision at every step.
        decisions = [seen(out, name, 1, rank)["decisions"] for rank in range(2)]  # type: ignore[index]
        assert decisions[0] == decisions[1] and len(decisions[0]) == 3
        service = services[name]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["selector"]["kubetune.dev/trial"] == name
        assert service["metadata"]["ownerReferences"][0]["uid"] == uid

    document["spec"]["workers"] = 3
    with pytest.raises(subprocess.CalledProcessError) as frozen:
        apply(control_plane, namespace, document)
    assert "spec.workers cannot change" in (frozen.value.stderr or ""), frozen.value.stderr


def test_a_crashing_rank_fails_the_trial_and_the_other_rank_is_stopped_at_once(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    for _ in range(2):
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    out = tmp_path / "seen"
    # Rank 1 exits 3 after step 2; rank 0 then sleeps 120 s, as if in a collective.
    apply(control_plane, namespace, gang_experiment("crash", out, steps=4, fault="exit"))

    def failed() -> dict[str, Any] | None:
        listed = trials(control_plane, namespace)
        state = listed[0].get("status") or {} if listed else {}
        return state if state.get("phase") == "Failed" else None

    trial = wait_for("the trial to fail", failed, 120, operator.log_tail)
    failed_at = time.monotonic()
    assert "exit code 3" in trial["reason"] and "rank 1 of 2" in trial["reason"], trial
    # Rank 0 is deleted at once, not left to sleep out its 120 s.
    wait_for(
        "rank 0 deleted",
        lambda: (
            (p := pods_by_name(control_plane, namespace).get("crash-0-a1-r0")) is None
            or p["metadata"].get("deletionTimestamp")
        ),
        20,
        operator.log_tail,
    )
    assert time.monotonic() - failed_at < 20
    assert status(control_plane, namespace, "crash")["trialsFailed"] == 1


def test_a_reclaimed_node_interrupts_the_whole_gang_which_resumes_and_completes(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    nodes = {
        n.name: n for n in (process_node_factory(gpus=1, taints=GPU_NODE_TAINTS) for _ in range(3))
    }
    out = tmp_path / "seen"
    apply(control_plane, namespace, gang_experiment("reclaim", out, steps=12, sleep=0.4))

    def reported(rank: int) -> int:
        found = seen(out, "reclaim-0", 1, rank)
        return max((int(s) for s in (found or {}).get("decisions", {})), default=0)

    wait_for("a few steps", lambda: reported(1) >= 3, 120, operator.log_tail)
    victim = pods_by_name(control_plane, namespace)["reclaim-0-a1-r1"]["spec"]["nodeName"]
    nodes[victim].interrupt()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "reclaim"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    (trial,) = trials(control_plane, namespace)
    state = trial["status"]
    assert state["phase"] == "Completed" and state["step"] == 12, state
    assert state["interruptions"] == 1 and state["attempt"] == 2, state
    pods = pods_by_name(control_plane, namespace)
    assert sorted(n for n in pods if n.startswith("reclaim-0-a2")) == [
        "reclaim-0-a2-r0",
        "reclaim-0-a2-r1",
    ]
    # Both ranks of the new gang resumed from the same complete step, past step 1.
    loaded = [seen(out, "reclaim-0", 2, rank)["loaded"] for rank in range(2)]  # type: ignore[index]
    assert loaded[0] == loaded[1] and loaded[0] >= 2, loaded


def test_a_sigkilled_operator_makes_exactly_one_gang_per_attempt(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    for _ in range(2):
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    out = tmp_path / "seen"
    apply(control_plane, namespace, gang_experiment("killed", out, steps=3, max_trials=2))
    wait_for(
        "a first pod",
        lambda: any(n.startswith("killed-") for n in pods_by_name(control_plane, namespace)),
        60,
        operator.log_tail,
    )
    operator.kill()
    operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "killed"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    pods = pods_by_name(control_plane, namespace)
    for trial in trials(control_plane, namespace):
        name = trial["metadata"]["name"]
        attempts = {n.rsplit("-r", 1)[0] for n in pods if n.startswith(f"{name}-a")}
        for attempt in attempts:
            # Names are deterministic: one pod per rank, never a rank twice or a third.
            assert sorted(n for n in pods if n.startswith(f"{attempt}-")) == [
                f"{attempt}-r0",
                f"{attempt}-r1",
            ]
        assert trial["status"]["phase"] == "Completed"


def test_a_gang_placed_in_part_is_released_after_the_timeout(
    control_plane: Any,
    namespace: str,
    installed: Path,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One GPU node for a gang of two: rank 0 holds it while rank 1 cannot be placed.
    After the partial-gang timeout the attempt is released whole (an interruption, with
    an Event), and once a second node comes the resumed gang completes."""
    monkeypatch.setenv("KUBETUNE_PARTIAL_GANG_SECONDS", "3")
    operator = OperatorProcess(installed, tmp_path).start()
    try:
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
        out = tmp_path / "seen"
        document = gang_experiment("half", out, steps=3)
        container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
        container["env"].append({"name": "GANG_BARRIER", "value": "1"})
        apply(control_plane, namespace, document)
        placed = wait_for(
            "rank 0 placed, rank 1 not",
            lambda: (
                (p := pods_by_name(control_plane, namespace))
                .get("half-0-a1-r0", {})
                .get("spec", {})
                .get("nodeName")
                and "half-0-a1-r1" in p
                and time.monotonic()
            ),
            60,
            operator.log_tail,
        )

        def released() -> list[dict[str, Any]]:
            events = get(control_plane, namespace, "events")["items"]
            return [e for e in events if e.get("reason") == "GangReleased"]

        (event, *_) = wait_for("the gang released", released, 30, operator.log_tail)
        # The timeout (3 s) plus at most a resync (5 s) and the loaded machine's slack.
        assert time.monotonic() - placed < 20
        assert "rank(s) 1 of its gang of 2 found no node" in event["message"], event
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
        done = wait_for(
            "the experiment to finish",
            lambda: finished(control_plane, namespace, "half"),
            120,
            operator.log_tail,
        )
        assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
        (trial,) = trials(control_plane, namespace)
        assert trial["status"]["interruptions"] >= 1 and trial["status"]["step"] == 3
    finally:
        operator.stop()
        print(f"--- operator log tail ---\n{operator.log_tail()}")


def test_two_pods_really_all_reduce_through_the_headless_service_name(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    """Two rank pods on two process nodes join one torch.distributed (gloo) group through
    MASTER_ADDR = rank 0's DNS name, resolved by the harness as cluster DNS would
    (ProcessNode resolve_pod_dns: each pod its own loopback IP)."""
    require_module("torch", "torch (the dev extra)")
    for _ in range(2):
        process_node_factory(gpus=1, taints=GPU_NODE_TAINTS, resolve_pod_dns=True)
    out = tmp_path / "seen"
    document = gang_experiment("ddp", out, steps=1)
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", str(HERE / "allreduce_trial.py")]
    container["env"].append({"name": "GLOO_SOCKET_IFNAME", "value": "lo"})
    apply(control_plane, namespace, document)
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "ddp"),
        150,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsFailed"] == 0, done
    (trial,) = trials(control_plane, namespace)
    assert trial["status"]["value"] == 3.0, trial["status"]  # 1 + 2, all-reduced
    pods = pods_by_name(control_plane, namespace)
    rank0_ip = pods["ddp-0-a1-r0"]["status"]["podIP"]
    assert rank0_ip.startswith("127.") and rank0_ip != pods["ddp-0-a1-r1"]["status"]["podIP"]
    for rank in range(2):
        found = json.loads((out / f"ddp-0.a1.r{rank}.json").read_text())
        assert found == {"rank": rank, "world": 2, "sum": 3.0, "master_addr": rank0_ip}
