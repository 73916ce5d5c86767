"""Which log-line reports must reach the engine (and the disk) at once, and which may wait.

A trial printing `loss=...` every iteration would otherwise make every line an fsynced
event. A report waits (the latest per attempt kept, the earlier ones dropped) unless a
decision or the result could rest on it: its step is one the scheduler decides at (a
rung, a median-stopping milestone, the attempt's target, maxResource), it is the
attempt's first, its value is not finite, or the trial is being told to stop anyway.
Waiting reports are handed over at least once a second and when the attempt ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from kubetune.engine import Engine
from kubetune.schedulers.base import is_milestone
from kubetune.schedulers.median import MedianStopping

FLUSH_SECONDS = 1.0


def wanted(metrics: Mapping[str, float], objective: str) -> bool:
    """A line is an event only when it carries the objective: other values drive nothing."""
    return objective in metrics


def report_now(
    engine: Engine, number: int, attempt: int, step: int, metrics: Mapping[str, float]
) -> bool:
    if not 0 <= number < len(engine.trials):
        return True  # let the engine say what is wrong with it
    trial = engine.trials[number]
    current = trial.attempt
    if current is None or current.number != attempt or current.first_step is None:
        return True
    if engine.ended is not None or number in engine.stop_reasons or current.decision:
        return True
    value = metrics.get(engine.spec.objective.metric)
    if value is None or not math.isfinite(value):
        return True
    scheduler = engine.scheduler
    limits = [current.target, scheduler.max_resource]
    if any(limit is not None and step >= limit for limit in limits):
        return True
    rungs: list[int] = getattr(scheduler, "rungs", [])
    if any(step >= r and k not in trial.rung_values for k, r in enumerate(rungs)):
        return True
    return isinstance(scheduler, MedianStopping) and is_milestone(step)
