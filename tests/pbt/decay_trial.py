"""A PBT member for the end-to-end tests: x <- x (1 - lr) per step, loss x + lr.

Its checkpoint (JSON) records who saved it at which step, and the lineage of every
checkpoint its state was loaded from, so a test can prove that an exploiting member
started from its parent's checkpoint at exactly the pinned step.
"""

from __future__ import annotations

import json
import os
import time

import kubetune_trial as kt


def main() -> int:
    info = kt.trial_info()
    lr = float(kt.param("lr", 0.1))
    x, start, loaded = 1.0, 1, []
    found = kt.start_checkpoint()
    if found is not None:
        state = json.loads(found[1])
        assert state["step"] == found[0], "a checkpoint is what its step says"
        x, start = state["x"], found[0] + 1
        loaded = [*state["loaded"], [state["saved_by"], state["step"]]]
    pause = float(os.environ.get("DECAY_STEP_SECONDS", "0.02"))
    # A member with a rate below DECAY_SLOW_BELOW_LR takes DECAY_SLOW_SECONDS more per
    # step (to order events across members without relying on the machine's speed).
    if lr < float(os.environ.get("DECAY_SLOW_BELOW_LR", "0")):
        pause += float(os.environ.get("DECAY_SLOW_SECONDS", "0"))
    for step in range(start, (info.max_resource or 12) + 1):
        # Worse members are slower, so they report an interval after the others and are
        # ranked against everyone (the first to report is ranked against fewer).
        time.sleep(pause * (0.2 + 2 * (x + lr) ** 2))
        x *= 1 - lr
        if kt.checkpoint_due(step) and not os.environ.get("DECAY_NO_CHECKPOINTS"):
            state = {"x": x, "step": step, "saved_by": info.trial, "loaded": loaded, "lr": lr}
            kt.save_checkpoint(json.dumps(state).encode(), step)
        decision = kt.report(step, loss=x + lr)
        if decision is kt.Decision.STOP:
            # A replaced member that takes its time to go: its replacement waits for it.
            time.sleep(float(os.environ.get("DECAY_STOP_EXIT_SECONDS", "0")))
        if decision != kt.Decision.CONTINUE:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
