"""trial_image/examples/digits-ddp.yaml, cut down (2 trials, 3 epochs), run locally: two
real processes per attempt that all-reduce through gloo; ASHA pauses both ranks at the
first rung and resumes the promoted trial from both ranks' shards."""

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


def test_digits_ddp_example_trains_two_ranks_with_pause_and_resume(tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "digits-ddp.yaml").read_text())
    spec = document["spec"]
    spec["scheduler"]["maxResource"] = 3
    spec["budget"].update(maxTrials=2, parallelTrials=2)
    spec["checkpoints"] = {"uri": (tmp_path / "ckpt").as_uri()}
    spec["trialTemplate"]["spec"]["containers"][0]["workingDir"] = str(EXAMPLES)
    ran = run_experiment(document, tmp_path, timeout=300)
    assert ran.process.returncode == 0, ran.output
    results = ran.results
    assert results["phase"] == "Succeeded"
    resumed = [t for t in results["trials"] if t["attempts"] == 2]
    assert len(resumed) == 1 and resumed[0]["state"] == "Completed", results["trials"]
    trial = resumed[0]["name"]
    shards = [tmp_path / "ckpt" / "digits-ddp" / trial / f"rank-{r}" for r in (0, 1)]
    common = set.intersection(*({f.name for f in s.glob("*.ckpt")} for s in shards))
    assert common, "both ranks saved their shard of the paused epoch"
    newest = max(common)
    states = [torch.load(io.BytesIO((s / newest).read_bytes()), weights_only=True) for s in shards]
    # DDP kept the ranks' models equal: the all-reduce really ran between the processes.
    for name, tensor in states[0]["model"].items():
        assert torch.equal(tensor, states[1]["model"][name]), name
    logs = tmp_path / ".kubetune" / "digits-ddp" / "logs"
    assert (logs / f"{trial}.attempt-2.rank-1.log").exists()
