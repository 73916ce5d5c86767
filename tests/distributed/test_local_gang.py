"""`kubetune run` with spec.workers: 2: real processes, the real SDK, real shards on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.kubetune_run import LocalRun, run_experiment

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


def experiment(name: str, checkpoints: Path, scheduler: dict[str, Any], **budget: int) -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [{"name": "lr", "type": "float", "min": 0.01, "max": 0.5}],
            "algorithm": {"name": "random", "seed": 3},
            "scheduler": scheduler,
            "budget": {"maxTrials": 1, "parallelTrials": 1, "maxFailedTrials": 0, **budget},
            "workers": 2,
            "checkpoints": {"uri": checkpoints.as_uri()},
            "trialTemplate": {
                "spec": {
                    "containers": [
                        {
                            "name": "rank",
                            "image": "x",
                            "command": ["python", str(HERE / "gang_trial.py")],
                        }
                    ]
                }
            },
        },
    }


def run(tmp_path: Path, document: dict, fault: str = "", steps: int = 4) -> LocalRun:
    (tmp_path / "seen").mkdir()
    env = {"GANG_OUT": str(tmp_path / "seen"), "GANG_FAULT": fault, "GANG_STEPS": str(steps)}
    return run_experiment(document, tmp_path, timeout=150, env=env)


def seen(tmp_path: Path, trial: str, attempt: int, rank: int) -> dict[str, Any]:
    return json.loads((tmp_path / "seen" / f"{trial}.a{attempt}.r{rank}.json").read_text())


def test_ranks_get_torch_env_rank_0_counts_and_all_hear_the_same_decisions(tmp_path: Path) -> None:
    asha = {
        "name": "asha",
        "resource": "step",
        "minResource": 1,
        "maxResource": 3,
        "reductionFactor": 3,
    }
    ran = run(tmp_path, experiment("ranks", tmp_path / "ckpt", asha, maxTrials=2))
    assert ran.process.returncode == 0, ran.output
    for trial in ran.results["trials"]:
        assert trial["value"] is not None and trial["value"] < 2, (
            trial
        )  # rank 1's 1000 never counts
        for attempt in range(1, trial["attempts"] + 1):
            r0, r1 = (seen(tmp_path, trial["name"], attempt, r) for r in (0, 1))
            assert r0["env"]["WORLD_SIZE"] == r1["env"]["WORLD_SIZE"] == "2"
            assert (r0["env"]["RANK"], r1["env"]["RANK"]) == ("0", "1")
            assert (r0["env"]["LOCAL_RANK"], r1["env"]["LOCAL_RANK"]) == ("0", "1")
            assert r0["env"]["LOCAL_WORLD_SIZE"] == "2"
            assert r0["env"]["MASTER_ADDR"] == r1["env"]["MASTER_ADDR"] == "127.0.0.1"
            assert r0["env"]["MASTER_PORT"] == r1["env"]["MASTER_PORT"]
            assert r0["decisions"] == r1["decisions"], (trial["name"], attempt)
    paused = [t for t in ran.results["trials"] if t["attempts"] > 1]
    assert paused, "ASHA paused a trial at its rung and resumed it"
    for trial in paused:
        assert seen(tmp_path, trial["name"], 1, 0)["decisions"]["1"] == "pause"
        for rank in (0, 1):  # each resumed from its own shard of the paused step
            assert seen(tmp_path, trial["name"], 2, rank)["loaded"] == 1


def test_a_rank_exiting_non_zero_fails_the_attempt_and_stops_the_others_at_once(
    tmp_path: Path,
) -> None:
    ran = run(tmp_path, experiment("fails", tmp_path / "ckpt", {"name": "none"}), fault="exit")
    trial = ran.results["trials"][0]
    assert trial["state"] == "Failed", trial
    assert trial["reason"].startswith("exit code 3: rank 1 of 2"), trial
    # Rank 0 sleeps 120 s after step 2 (a rank left in a collective): it was stopped.
    assert ran.seconds < 60, ran.seconds
    assert ran.process.returncode == 1


def test_a_rank_killed_by_a_signal_resumes_the_whole_gang_from_the_last_complete_step(
    tmp_path: Path,
) -> None:
    ran = run(tmp_path, experiment("killed", tmp_path / "ckpt", {"name": "none"}), fault="kill")
    assert ran.process.returncode == 0, ran.output
    trial = ran.results["trials"][0]
    assert trial["state"] == "Completed" and trial["attempts"] == 2, trial
    assert trial["interruptions"] == 1, trial
    assert trial["value"] == pytest.approx(trial["params"]["lr"] + 1 / 4)  # rank 0 at step 4
    # Rank 0 had saved step 3, rank 1 had not: both resumed from step 2.
    for rank in (0, 1):
        again = seen(tmp_path, trial["name"], 2, rank)
        assert again["loaded"] == 2 and set(again["decisions"]) == {"3", "4"}, again


def test_a_script_reporting_from_rank_0_only_ends_with_rank_0(tmp_path: Path) -> None:
    ran = run(
        tmp_path, experiment("rank0", tmp_path / "ckpt", {"name": "none"}), fault="rank0-reports"
    )
    assert ran.process.returncode == 0, ran.output
    trial = ran.results["trials"][0]
    assert trial["state"] == "Completed", trial
    assert trial["value"] == pytest.approx(trial["params"]["lr"] + 1 / 4)
    # Rank 1, left hanging, was stopped once rank 0 had exited 0 and the grace period
    # (10 s) had passed, not after its 120 s.
    assert ran.seconds < 60, ran.seconds


def test_a_stop_ends_every_rank(tmp_path: Path) -> None:
    document = experiment("stopped", tmp_path / "ckpt", {"name": "none"})
    document["spec"]["budget"]["maxDuration"] = "4s"
    ran = run(tmp_path, document, steps=2000)  # 100 s of steps
    trial = ran.results["trials"][0]
    assert ran.results["reason"] == "MaxDurationReached", ran.results
    assert trial["state"] == "Stopped", trial
    assert ran.seconds < 40, ran.seconds
    for rank in (0, 1):
        pid = seen(tmp_path, trial["name"], 1, rank)["pid"]
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
