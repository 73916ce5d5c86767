"""PBT as a careless user runs it: bad specs are refused field by field (exit 2), and a
trial script that reports interval steps without checkpointing them fails at once with
the fix in its message, instead of having its members replaced by copies that cannot
start (PinnedCheckpointMissing) while the run "succeeds" with half a population.

(Two `kubetune run` on one state directory: refused whatever the scheduler,
tests/local/test_misbehaving.py; kill -9 around exploits: test_kill_sweep.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.pbt.test_kill_sweep import read_events
from tests.pbt.test_local import KUBETUNE, experiment, run

pytestmark = pytest.mark.slow


def test_every_bad_pbt_field_is_named_and_nothing_runs(tmp_path: Path) -> None:
    document = experiment("pbt", tmp_path / "ckpt")
    spec = document["spec"]
    spec["scheduler"].update(quantile=0, interval=50, perturbationFactors=[-1.2, 1.2])
    spec["budget"]["parallelTrials"] = 1
    del spec["checkpoints"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
    for field in (
        "spec.scheduler.interval: must be at most maxResource (12), got 50",
        "spec.scheduler.quantile: must be in (0, 0.5], got 0",
        "spec.scheduler.perturbationFactors[0]: must be a positive number, got -1.2",
        "spec.budget.parallelTrials: pbt's population: at least 2, got 1",
        "spec.checkpoints: required by scheduler pbt",
    ):
        assert any(line.startswith(field) for line in lines), (field, lines)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / ".kubetune" / "pbt").exists()


@pytest.mark.parametrize(
    ("quantile", "factors", "message"),
    [
        (0.6, [0.8, 1.2], "spec.scheduler.quantile: must be in (0, 0.5], got 0.6"),
        (0.25, [], "spec.scheduler.perturbationFactors: must list at least one factor"),
    ],
)
def test_more_bad_fields_each_on_its_line(
    tmp_path: Path, quantile: float, factors: list[float], message: str
) -> None:
    document = experiment("pbt", tmp_path / "ckpt")
    document["spec"]["scheduler"].update(quantile=quantile, perturbationFactors=factors)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    done = run(path, timeout=60)
    assert done.returncode == 2
    assert message in [line.strip() for line in (done.stdout + done.stderr).splitlines()]


def test_a_script_that_never_checkpoints_is_told_at_its_first_interval(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    path = tmp_path / "pbt.yaml"
    path.write_text(yaml.safe_dump(experiment("pbt", root)))
    done = subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live", "--output", str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=os.environ | {"DECAY_STEP_SECONDS": "0.02", "DECAY_NO_CHECKPOINTS": "1"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    # Every member failed at its first interval report, saying what to do; no one was
    # replaced from a checkpoint that does not exist.
    assert [t["state"] for t in results["trials"]] == ["Failed"] * 4
    for trial in results["trials"]:
        assert "CheckpointNotSaved" in trial["reason"], trial
        assert "kt.save_checkpoint(state, step)" in trial["reason"], trial
    records = read_events(tmp_path / ".kubetune" / "pbt" / "events.jsonl")
    assert not any(r["type"] == "TrialExploited" for r in records)
