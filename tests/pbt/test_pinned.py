"""A checkpoint that a pending or running member may still need is never deleted (Ray Tune
#9036), end to end in `kubetune run`: the donor has run to the end and completed before
its replacement is even decided, and its checkpoint at the pinned step is still there
while the replacement waits and while it runs, and is the one it starts from.

Nothing in kubetune deletes checkpoints but the SDK's retention (`save_checkpoint`'s
`keep`), which under PBT prunes none; a retention that forgot PBT (keeping a donor's last
two) would make the replacement fail with PinnedCheckpointMissing here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.pbt.test_kill_sweep import read_events
from tests.pbt.test_local import KUBETUNE, checkpoint, experiment

pytestmark = pytest.mark.slow


def test_a_completed_donors_pinned_checkpoint_stays_while_its_replacement_needs_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ckpt"
    document = experiment("pbt", root, parallelTrials=2)
    spec = document["spec"]
    # Two members: pbt-0 (rate 0.01) slow and worse, pbt-1 (0.3) fast and better: pbt-1
    # completes all 12 steps before pbt-0 reports step 2 and is replaced from it.
    spec["parameters"] = [{"name": "lr", "type": "categorical", "values": [0.01, 0.3]}]
    spec["algorithm"] = {"name": "grid"}
    spec["scheduler"]["resampleProbability"] = 0.0
    path = tmp_path / "pbt.yaml"
    path.write_text(yaml.safe_dump(document))
    log = tmp_path / ".kubetune" / "pbt" / "events.jsonl"
    env = os.environ | {
        "DECAY_STEP_SECONDS": "0.02",
        "DECAY_SLOW_BELOW_LR": "0.1",
        "DECAY_SLOW_SECONDS": "0.4",
    }
    proc = subprocess.Popen(
        [*KUBETUNE, "run", str(path), "--no-live", "--output", str(tmp_path / "out.json")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: set[str] = set()  # what the donor's checkpoint outlived, while it was watched
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            records = read_events(log)
            exploit = next((r for r in records if r["type"] == "TrialExploited"), None)
            if exploit is not None:
                donor = f"pbt-{exploit['parent']}"
                pinned = root / "pbt" / donor / f"step-{exploit['from_step']:08d}.ckpt"
                child = exploit["number"]
                ended = {r["number"] for r in records if r["type"] == "AttemptEnded"}
                launched = {r["number"] for r in records if r["type"] == "TrialLaunched"}
                own = root / "pbt" / f"pbt-{child}"
                if exploit["parent"] in ended:
                    state = "running" if child in launched else "pending"
                    if not own.exists() or not any(own.glob("step-*.ckpt")):
                        assert pinned.exists(), f"{pinned} deleted while pbt-{child} {state}"
                        seen.add(state)
            time.sleep(0.01)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "running" in seen, seen  # the window was watched, not skipped
    results = json.loads((tmp_path / "out.json").read_text())
    trials = {t["name"]: t for t in results["trials"]}
    assert trials["pbt-1"]["state"] == "Completed" and trials["pbt-0"]["replacedBy"] == "pbt-2"
    child = trials["pbt-2"]
    assert (child["parent"], child["fromStep"]) == ("pbt-1", 2)
    assert all(t["state"] != "Failed" for t in trials.values()), trials
    assert checkpoint(root, "pbt-2", 4)["loaded"] == [["pbt-1", 2]]
    # The donor kept every checkpoint it saved: any may be pinned by a later exploit.
    assert sorted(p.name for p in (root / "pbt" / "pbt-1").glob("step-*.ckpt")) == [
        f"step-{s:08d}.ckpt" for s in range(2, 13, 2)
    ]
