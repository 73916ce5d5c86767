"""A fast trial for local-mode tests: a noisy-free quadratic that improves with steps.

Uses the SDK: pauses by checkpointing, resumes from the checkpoint, exits on stop.
`--fail-if-x-above` makes chosen configurations crash, for failure handling tests.
"""

from __future__ import annotations

import argparse
import sys
import time

import kubetune_trial as kt

parser = argparse.ArgumentParser()
parser.add_argument("--sleep", type=float, default=0.02)
parser.add_argument("--fail-if-x-above", type=float, default=None)
parser.add_argument("--checkpoint-every-step", action="store_true")
# Durability tests: end on its own after this step (before maxResource), stay a while
# after the last report, and journal every answer it got to DIR/<trial>.journal.
parser.add_argument("--stop-after", type=int, default=None)
parser.add_argument("--linger", type=float, default=0.0)
parser.add_argument("--journal", default=None)
# Seconds between a pause answer and the exit (an operator test acts in between).
parser.add_argument("--pause-linger", type=float, default=0.0)
options = parser.parse_args()

params = kt.params()
info = kt.trial_info()
x, y = float(params["x"]), float(params.get("y", 0.0))
if options.fail_if_x_above is not None and x > options.fail_if_x_above:
    print("Traceback: simulated crash", file=sys.stderr)
    sys.exit(3)
start = 1
if info.resume:
    found = kt.load_checkpoint()
    if found is not None:
        start = int(found[1].decode()) + 1
last = info.max_resource or 10
if options.stop_after is not None:
    last = min(last, options.stop_after)
for step in range(start, last + 1):
    time.sleep(options.sleep)
    loss = (x - 0.3) ** 2 + (y + 0.1) ** 2 + 1.0 / step
    decision = kt.report(step, loss=loss)
    if options.journal:
        with open(f"{options.journal}/{info.trial}.journal", "a") as journal:
            journal.write(f"{info.attempt} {step} {decision.value} {loss!r}\n")
    if options.checkpoint_every_step:
        kt.save_checkpoint(str(step).encode(), step)
    if decision == kt.Decision.PAUSE:
        kt.save_checkpoint(str(step).encode(), step)
        time.sleep(options.pause_linger)
        sys.exit(0)
    if decision == kt.Decision.STOP:
        sys.exit(0)
time.sleep(options.linger)
