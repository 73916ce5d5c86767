"""A rank of a distributed trial for the tests, with the SDK and no torch.

Each step it saves its checkpoint shard (JSON: rank, step), then reports: rank 0 its true
loss, other ranks a loss of 1000 (which must never count). It writes what it saw (its
environment, what it loaded, each decision) to $GANG_OUT/<trial>.a<attempt>.r<rank>.json.
Faults, by $GANG_FAULT (attempt 1 only):
* `exit`: rank 1 exits 3 after step 2; rank 0 then sleeps 120 s (a rank left in a
  collective), which the gang must cut short;
* `kill`: at step 3 rank 1 waits for rank 0's shard of step 3, then SIGKILLs itself
  before saving its own, while rank 0 waits (as in a collective): step 3 is not
  complete, so the whole gang resumes from step 2; in attempt 2 rank 0 starts 1 s late,
  after rank 1 has saved step 3 again (its load must still pick step 2);
* `rank0-reports`: only rank 0 reports; rank 1 hangs after its last step.
$GANG_BARRIER set: each rank waits for every rank of its attempt to start, as
`init_process_group` does.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import kubetune_trial as kt

STEPS = int(os.environ.get("GANG_STEPS", "4"))
SLEEP = float(os.environ.get("GANG_SLEEP", "0.05"))  # seconds per step


def main() -> int:
    info = kt.trial_info()
    out = Path(os.environ["GANG_OUT"]) / f"{info.trial}.a{info.attempt}.r{info.rank}.json"
    env = {
        k: os.environ.get(k)
        for k in (
            "WORLD_SIZE",
            "RANK",
            "LOCAL_RANK",
            "LOCAL_WORLD_SIZE",
            "MASTER_ADDR",
            "MASTER_PORT",
        )
    }
    seen: dict = {"env": env, "loaded": None, "decisions": {}, "pid": os.getpid()}

    def write() -> None:
        out.write_text(json.dumps(seen))

    start = 1
    if os.environ.get("GANG_FAULT") == "kill" and info.attempt == 2 and info.rank == 0:
        time.sleep(1)
    if info.resume and (found := kt.load_checkpoint()) is not None:
        state = json.loads(found[1])
        assert state["rank"] == info.rank and state["step"] == found[0]
        seen["loaded"] = found[0]
        start = found[0] + 1
    write()
    if os.environ.get("GANG_BARRIER"):
        # As init_process_group does: no rank starts before every rank of its gang has.
        peers = [
            out.with_name(f"{info.trial}.a{info.attempt}.r{r}.json") for r in range(info.world_size)
        ]
        while not all(p.exists() for p in peers):
            time.sleep(0.05)
    lr = float(kt.param("lr", 0.1))
    fault = os.environ.get("GANG_FAULT", "") if info.attempt == 1 else ""
    for step in range(start, (info.max_resource or STEPS) + 1):
        time.sleep(SLEEP)
        if fault == "kill" and step == 3 and info.rank == 1:
            shard = Path(info.checkpoint_uri.removeprefix("file://")) / "rank-0"
            while not (shard / f"step-{step:08d}.ckpt").exists():
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
        kt.save_checkpoint(json.dumps({"rank": info.rank, "step": step}).encode(), step)
        loss = lr + 1.0 / step if info.rank == 0 else 1000.0
        if fault == "rank0-reports" and info.rank != 0:
            if step == STEPS:
                time.sleep(120)  # never told anything: left in a collective
            continue
        decision = kt.report(step, loss=loss)
        seen["decisions"][str(step)] = decision.value
        write()
        if fault == "exit" and step == 2:
            if info.rank == 1:
                return 3
            time.sleep(120)
        if fault == "kill" and step == 3:
            time.sleep(120)  # rank 0 waits in the next collective for rank 1, gone
        if decision != kt.Decision.CONTINUE:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
