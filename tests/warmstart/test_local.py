"""spec.warmStart in local mode: `kubetune run` a parent, then a child that starts from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.local.test_run import TRIALS, events, experiment, run, write

pytestmark = pytest.mark.slow

COMMAND = ["python", str(TRIALS / "quadratic.py"), "--sleep=0"]


def child(mode: str, parents: list[str], **budget: Any) -> dict[str, Any]:
    document = experiment("child", COMMAND, budget={"maxTrials": 3, "parallelTrials": 1, **budget})
    # A narrower x: the parent's trials with x below 0 do not fit and are left out.
    document["spec"]["parameters"][0] = {"name": "x", "type": "float", "min": 0.0, "max": 1.0}
    document["spec"]["warmStart"] = {"experiments": parents, "mode": mode}
    return document


def test_a_child_loads_the_parent_once_and_resumes_without_it(tmp_path: Path) -> None:
    parent = write(
        tmp_path, experiment("parent", COMMAND, budget={"maxTrials": 8, "parallelTrials": 2})
    )
    assert run(parent, timeout=120).returncode == 0
    parent_trials = [
        e for e in events(tmp_path / ".kubetune" / "parent") if e["type"] == "TrialSampled"
    ]
    fits = sum(0.0 <= e["params"]["x"] <= 1.0 for e in parent_trials)
    assert 0 < fits < 8  # the seed gives both kinds

    path = write(tmp_path, child("reuse", ["parent"]))
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{fits} earlier trials loaded from parent, {8 - fits} left out" in result.stdout
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["warmStart"] == {
        "mode": "reuse",
        "experiments": ["parent"],
        "loaded": fits,
        "leftOut": 8 - fits,
        "reasons": {"x: outside [0, 1]": 8 - fits},
    }
    assert len(results["trials"]) == 3  # maxTrials counts new trials only
    history = events(tmp_path / ".kubetune" / "child")
    assert history[0]["type"] == "WarmStarted" and history[1]["type"] == "ExperimentStarted"
    stored = history[0]["prior_trials"]
    assert [t["experiment"] for t in stored] == ["parent"] * fits
    assert all(0.0 <= t["params"]["x"] <= 1.0 for t in stored)

    # The parent is gone; a raised budget resumes the child from its own history alone.
    shutil.rmtree(tmp_path / ".kubetune" / "parent")
    path = write(tmp_path, child("reuse", ["parent"], maxTrials=5))
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "earlier trials loaded" not in result.stdout
    results = json.loads((tmp_path / "out.json").read_text())
    assert len(results["trials"]) == 5 and results["warmStart"]["loaded"] == fits
    again = events(tmp_path / ".kubetune" / "child")
    assert [e for e in again if e["type"] == "WarmStarted"] == [history[0]]


def test_a_missing_parent_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, child("transfer", ["never-ran"]))
    result = run(path, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kubetune: spec.warmStart.experiments[0]: ")
    assert "'never-ran'" in lines[0]
    assert not (tmp_path / ".kubetune" / "child").exists()


def test_a_parent_with_another_objective_is_refused(tmp_path: Path) -> None:
    document = experiment("parent", COMMAND, budget={"maxTrials": 1})
    assert run(write(tmp_path, document), timeout=60).returncode == 0
    other = child("transfer", ["parent"])
    other["spec"]["objective"]["goal"] = "maximize"
    result = run(write(tmp_path, other), timeout=60)
    assert result.returncode == 2
    assert "spec.warmStart.experiments[0]: parent optimizes loss (minimize)" in result.stderr


def test_the_runs_own_state_directory_is_not_an_earlier_experiment(tmp_path: Path) -> None:
    """--state-dir named like the earlier experiment: with --fresh, the run's own old
    state would be read as that experiment's (its trials renamed), then moved aside."""
    own = tmp_path / ".kubetune" / "prev"
    before = experiment("child", COMMAND, budget={"maxTrials": 1})
    assert run(write(tmp_path, before), "--state-dir", str(own), timeout=60).returncode == 0
    stored = (own / "events.jsonl").read_bytes()
    result = run(write(tmp_path, child("transfer", ["prev"])), "--state-dir", str(own), "--fresh")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kubetune: spec.warmStart.experiments[0]: {own} is this run's own state directory "
        f"(--state-dir): an experiment cannot start from itself"
    ]
    assert (own / "events.jsonl").read_bytes() == stored  # nothing moved or written
