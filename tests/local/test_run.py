"""`kubetune run` end to end: real processes, the real SDK, the real report endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubetune_run import KUBETUNE

REPO = Path(__file__).resolve().parents[2]
TRIALS = Path(__file__).resolve().parent / "trials"

pytestmark = pytest.mark.slow


def experiment(
    name: str,
    command: list[str],
    *,
    scheduler: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    algorithm: str = "tpe",
) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "loss", "goal": "minimize"},
            "parameters": [
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
            ],
            "algorithm": {"name": algorithm, "seed": 3},
            "scheduler": scheduler or {"name": "none"},
            "budget": budget or {"maxTrials": 6, "parallelTrials": 2},
            "trialTemplate": {
                "spec": {"containers": [{"name": "trial", "image": "x", "command": command}]}
            },
        },
    }


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(path: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=path.parent,
    )


def events(state_dir: Path) -> list[dict[str, Any]]:
    lines = (state_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


ASHA = {
    "name": "asha",
    "resource": "step",
    "minResource": 1,
    "maxResource": 9,
    "reductionFactor": 3,
}


def test_the_digits_example_finds_a_best_trial(tmp_path: Path) -> None:
    """The shipped example (torch MLP, bayesian + ASHA), on a smaller budget."""
    document = yaml.safe_load((REPO / "trial_image/examples/digits-asha.yaml").read_text())
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", str(REPO / "trial_image/examples/digits.py")]
    document["spec"]["budget"] = {"maxTrials": 5, "parallelTrials": 2}
    document["spec"]["scheduler"]["maxResource"] = 3  # rungs 1, 3: one of 5 is promoted
    path = write(tmp_path, document)
    result = run(path, "--output", str(tmp_path / "results.json"), timeout=540)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["phase"] == "Succeeded"
    best = results["best"]
    assert best["trial"].startswith("digits-mlp-")
    assert 0 < best["value"] < 2.3  # cross-entropy of a 10-class guess is 2.30
    assert {"lr", "hidden", "optimizer"} <= set(best["params"])
    assert len(results["trials"]) == 5
    completed = [t for t in results["trials"] if t["state"] == "Completed"]
    assert completed and all(t["resource"] == 3 for t in completed)
    assert "best trial digits-mlp-" in result.stdout


def test_asha_resumes_promoted_trials_from_their_checkpoints(tmp_path: Path) -> None:
    command = ["python", str(TRIALS / "quadratic.py")]
    document = experiment(
        "asha", command, scheduler=ASHA, budget={"maxTrials": 9, "parallelTrials": 3}
    )
    path = write(tmp_path, document)
    result = run(path, "--output", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    history = events(tmp_path / ".kubetune" / "asha")
    resumed = [e for e in history if e["type"] == "TrialLaunched" and e["resume"]]
    assert resumed, "ASHA promoted no trial"
    for launch in resumed:
        reports = [
            e["step"]
            for e in history
            if e["type"] == "Reported"
            and e["number"] == launch["number"]
            and e["attempt"] == launch["attempt"]
        ]
        previous = [
            e["step"]
            for e in history
            if e["type"] == "Reported"
            and e["number"] == launch["number"]
            and e["attempt"] == launch["attempt"] - 1
        ]
        # The new attempt starts right after the step its predecessor paused at.
        assert min(reports) == max(previous) + 1 > 1
    results = json.loads((tmp_path / "out.json").read_text())
    for trial in results["trials"]:
        if trial["state"] == "Completed":
            assert trial["resource"] == 9  # nothing retrained: 1 + 2 + 6 steps


def test_log_line_trials_without_the_sdk(tmp_path: Path) -> None:
    path = write(tmp_path, experiment("logs", ["python", str(TRIALS / "loglines.py")]))
    result = run(path, "--output", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    assert all(t["state"] == "Completed" and t["resource"] == 5 for t in results["trials"])
    best = results["best"]
    assert best["value"] == pytest.approx((best["params"]["x"] - 0.3) ** 2 + 1 / 5)


def test_too_many_failures_fail_the_experiment_with_a_reason(tmp_path: Path) -> None:
    command = ["python", str(TRIALS / "quadratic.py"), "--fail-if-x-above=-0.5"]
    budget = {"maxTrials": 12, "parallelTrials": 2, "maxFailedTrials": 1}
    path = write(tmp_path, experiment("fails", command, budget=budget, algorithm="random"))
    result = run(path, "--output", str(tmp_path / "out.json"))
    assert result.returncode == 1
    assert "TooManyFailedTrials" in result.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    failed = [t for t in results["trials"] if t["state"] == "Failed"]
    assert len(failed) == 2
    assert all("exit code 3" in t["reason"] and "simulated crash" in t["reason"] for t in failed)


def test_an_invalid_experiment_is_refused_naming_the_field(tmp_path: Path) -> None:
    document = experiment("bad", ["python", "x.py"])
    document["spec"]["parameters"][0]["min"] = 2.0
    result = run(write(tmp_path, document))
    assert result.returncode == 2
    assert "spec.parameters[0].min: must be less than max" in result.stderr
    assert not (tmp_path / ".kubetune").exists()


def test_killed_runner_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    command = ["python", str(TRIALS / "quadratic.py"), "--sleep=0.15"]
    budget = {"maxTrials": 8, "parallelTrials": 2}
    path = write(tmp_path, experiment("crash", command, budget=budget))
    state = tmp_path / ".kubetune" / "crash"
    runner = subprocess.Popen(
        [*KUBETUNE, "run", str(path), "--no-live"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    finished: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(finished) < 3:
        time.sleep(0.2)
        if (state / "events.jsonl").exists():
            finished = {e["number"]: e for e in events(state) if e["type"] == "AttemptEnded"}
    assert len(finished) >= 3, "the runner made too little progress to test a crash"
    children = _children(runner.pid)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    survivors = {pid: _cmdline(pid) for pid in children if _alive(pid)}
    assert not survivors, f"processes outlived the runner: {survivors}"

    before = {e["number"]: e for e in events(state) if e["type"] == "AttemptEnded"}
    result = run(path, "--output", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming crash" in result.stdout
    results = json.loads((tmp_path / "out.json").read_text())
    assert [t["name"] for t in results["trials"]] == [f"crash-{n}" for n in range(8)]
    launches = [e for e in events(state) if e["type"] == "TrialLaunched"]
    for number in before:
        # A trial that had ended before the crash was never launched again.
        assert sum(e["number"] == number for e in launches) == 1
        assert results["trials"][number]["state"] == "Completed"
    interrupted = [t for t in results["trials"] if t["interruptions"]]
    assert all(t["state"] == "Completed" and t["attempts"] == 2 for t in interrupted)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_ctrl_c_stops_trials_keeps_state_and_the_next_run_continues(tmp_path: Path) -> None:
    command = ["python", str(TRIALS / "quadratic.py"), "--sleep=0.2"]
    path = write(
        tmp_path, experiment("ctrlc", command, budget={"maxTrials": 6, "parallelTrials": 2})
    )
    state = tmp_path / ".kubetune" / "ctrlc"
    runner = subprocess.Popen(
        [*KUBETUNE, "run", str(path), "--no-live"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if (state / "events.jsonl").exists() and any(
            e["type"] == "AttemptEnded" for e in events(state)
        ):
            break
    children = _children(runner.pid)
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=30)
    assert runner.returncode == 130, output
    assert "run the same command again" in output
    assert not [pid for pid in children if _alive(pid) and "quadratic" in _cmdline(pid)]
    ended = [e for e in events(state) if e["type"] == "AttemptEnded"]
    assert any(e["kind"] == "interrupted" for e in ended)  # saved as interrupted, not failed
    result = run(path, "--output", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    assert len(results["trials"]) == 6
    assert all(t["state"] == "Completed" for t in results["trials"])
