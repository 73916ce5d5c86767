"""A trial for `objective.target` tests: trial number `--hit` reaches the target at once.

Every other trial trains for `--seconds`, reporting a loss far from the target, until it
is told to stop: an experiment that stops its running trials when the target is reached
ends in seconds, one that waits for them does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import kubetune_trial as kt

parser = argparse.ArgumentParser()
parser.add_argument("--hit", type=int, default=2)
parser.add_argument("--seconds", type=float, default=120.0)
options = parser.parse_args()

number = int(os.environ["KUBETUNE_TRIAL"].rpartition("-")[2])
if number == options.hit:
    kt.report(1, loss=0.01)
    sys.exit(0)
deadline = time.monotonic() + options.seconds
step = 0
while time.monotonic() < deadline:
    step += 1
    if kt.report(step, loss=1.0 + 1.0 / step) == kt.Decision.STOP:
        sys.exit(0)
    time.sleep(0.1)
