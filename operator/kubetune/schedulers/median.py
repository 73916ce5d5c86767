"""Median stopping (Golovin et al., "Google Vizier", KDD 2017), with Optuna's
MedianPruner semantics: at step t, a trial whose best value so far is worse than the
median of the completed trials' values at step t is stopped. Nothing is paused.

Past step 100 it decides at milestone steps only (110, 120, …, 1000, 1100, …; see
`is_milestone`) and takes its best value so far over those: the operator thins long
histories but always keeps milestone reports, so a restarted operator decides from the
same values as the one before it. Below 100 every step is a milestone and the semantics
are exactly Optuna's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from kubetune.schedulers.base import NoPromotions, is_milestone, stop_at_max
from kubetune.trials import Decision, TrialPhase, TrialRecord, Verdict


class MedianStopping(NoPromotions):
    def __init__(
        self, sign: float, min_trials: int, warmup_steps: int, max_resource: int | None
    ) -> None:
        self.sign = sign
        self.min_trials = min_trials
        self.warmup_steps = warmup_steps
        self.max_resource = max_resource

    def bracket(self, number: int) -> int:
        return 0

    def initial_target(self, number: int) -> int | None:
        return self.max_resource

    def on_report(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> tuple[Verdict, int | None]:
        done = stop_at_max(step, self.max_resource)
        if done is not None:
            return done, None
        completed = [t for t in trials if t.phase is TrialPhase.COMPLETED]
        if step < self.warmup_steps or len(completed) < self.min_trials:
            return Verdict.go_on(), None
        if not is_milestone(step):
            return Verdict.go_on(), None
        at_step = [self.sign * t.values[step] for t in completed if step in t.values]
        if not at_step:
            return Verdict.go_on(), None
        median = statistics.median(at_step)
        own = [self.sign * v for s, v in trial.values.items() if s <= step and is_milestone(s)]
        own.append(self.sign * value)
        best = min(own)
        if best > median:
            reason = (
                f"best {trial_metric(best, self.sign)} worse than median "
                f"{trial_metric(median, self.sign)} at step {step}"
            )
            return Verdict(Decision.STOP, reason, TrialPhase.STOPPED), None
        return Verdict.go_on(), None

    def must_keep(self, step: int) -> bool:
        return is_milestone(step)  # decisions compare values at milestones only


def trial_metric(signed: float, sign: float) -> str:
    return f"{signed * sign:.6g}"


class NoScheduler(NoPromotions):
    """Every trial runs until it ends by itself (or reaches maxResource, when set)."""

    def __init__(self, max_resource: int | None) -> None:
        self.max_resource = max_resource

    def bracket(self, number: int) -> int:
        return 0

    def initial_target(self, number: int) -> int | None:
        return self.max_resource

    def on_report(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> tuple[Verdict, int | None]:
        return stop_at_max(step, self.max_resource) or Verdict.go_on(), None

    def must_keep(self, step: int) -> bool:
        return False  # nothing is decided from a report but maxResource
