"""`objective.target` in local mode: real processes, the real SDK and report endpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.local.test_run import TRIALS, events, experiment, run, write

pytestmark = pytest.mark.slow


def test_reaching_the_target_stops_running_trials_and_succeeds(tmp_path: Path) -> None:
    # Trials 0 and 1 would train for two minutes; trial 2 reports 0.01 at once.
    command = ["python", str(TRIALS / "target.py"), "--hit=2", "--seconds=120"]
    document = experiment(
        "target", command, budget={"maxTrials": 20, "parallelTrials": 3}, algorithm="random"
    )
    document["spec"]["objective"]["target"] = 0.05
    path = write(tmp_path, document)
    started = time.monotonic()
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60, f"took {elapsed:.0f}s: the running trials were waited for"
    results = json.loads((tmp_path / "out.json").read_text())
    assert (results["phase"], results["reason"]) == ("Succeeded", "TargetReached")
    assert results["best"]["trial"] == "target-2" and results["best"]["value"] == 0.01
    states = {t["name"]: (t["state"], t["reason"]) for t in results["trials"]}
    # The trials training on were cut short (local mode stops a trial with SIGTERM); the
    # one that reached the target is done, whether it exited before the stop or not.
    assert states["target-0"] == states["target-1"] == ("Stopped", "TargetReached")
    assert states["target-2"] in {("Completed", "exited"), ("Completed", "TargetReached")}
    assert len(states) == 3
    history = events(tmp_path / ".kubetune" / "target")
    assert [e["reason"] for e in history if e["type"] == "ExperimentEnded"] == ["TargetReached"]
    assert "TargetReached" in result.stdout + result.stderr
