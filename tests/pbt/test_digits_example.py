"""trial_image/examples/digits-pbt.yaml, cut down (3 members, 6 epochs), run locally:
the torch checkpoints carry each member's lineage, and a member made by an exploit
trained on from its parent's state at the pinned epoch with its own lr and momentum."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml

from tests.kubetune_run import run_experiment

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "trial_image" / "examples"

pytestmark = pytest.mark.slow


def test_digits_pbt_example_runs_and_records_lineage(tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "digits-pbt.yaml").read_text())
    spec = document["spec"]
    # Ranked every epoch, five decision points: a member is ranked against those that
    # reported the step before it, so at any one point the worst may escape (it reported
    # first); with two points that left no replacement in about one run in ten.
    spec["scheduler"]["maxResource"] = 6
    spec["scheduler"]["interval"] = interval = 1
    spec["scheduler"]["quantile"] = 0.5
    spec["budget"]["parallelTrials"] = 3
    spec["checkpoints"]["uri"] = (tmp_path / "ckpt").as_uri()
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["workingDir"] = str(EXAMPLES)
    ran = run_experiment(document, tmp_path, timeout=400)
    assert ran.process.returncode == 0, ran.output
    results = ran.results
    assert results["reason"] == "PopulationTrained"
    children = [t for t in results["trials"] if t["parent"]]
    assert children, "the worst member was replaced at least once"
    for child in children:
        step = child["fromStep"]
        name = tmp_path / "ckpt" / "digits-pbt" / child["name"] / f"step-{step + interval:08d}.ckpt"
        state = torch.load(io.BytesIO(name.read_bytes()), weights_only=True)
        *_, previous, own = state["lineage"]
        assert previous[:2] == [child["parent"], step]
        assert own[:2] == [child["name"], step + interval]
        assert own[2:] == [child["params"]["lr"], child["params"]["momentum"]]
    best = results["best"]
    assert best["schedule"][-1]["trial"] == best["trial"]
