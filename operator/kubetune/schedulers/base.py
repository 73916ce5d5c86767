"""What every scheduler answers, and the rung arithmetic the rung-based ones share."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from kubetune.schedulers.ladders import RungLadders
from kubetune.trials import Decision, TrialPhase, TrialRecord, Verdict


class SchedulerPolicy(Protocol):
    """A pure scheduling policy; the engine owns all state and calls these in order."""

    max_resource: int | None

    def initial_target(self, number: int) -> int | None:
        """Resource at which a new trial is paused or stopped first (None: run freely)."""
        ...

    def bracket(self, number: int) -> int:
        """The bracket a new trial belongs to (0 for single-bracket schedulers)."""
        ...

    def on_report(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> tuple[Verdict, int | None]:
        """The verdict for a report, and the rung index it reached (None: not a rung)."""
        ...

    def promotions(
        self,
        trials: Sequence[TrialRecord],
        free: int,
        ladders: RungLadders | None = None,
        holders: Sequence[TrialRecord] | None = None,
    ) -> list[tuple[TrialRecord, int]]:
        """Up to `free` paused trials to resume, each with the resource to train to."""
        ...

    def must_keep(self, step: int) -> bool:
        """Whether a CONTINUE report at `step` that reached no rung must survive history
        compaction, because a later decision of this policy reads it (the store asks)."""
        ...

    def most_promotions(
        self, trials: Sequence[TrialRecord], ladders: RungLadders, holders: Sequence[TrialRecord]
    ) -> int | None:
        """The most paused trials this policy may still resume, however the trials holding
        a slot (`holders`) report from now on; None when it cannot say."""
        ...


class NoPromotions:
    """For a policy that never resumes a paused trial (it pauses none)."""

    def promotions(
        self,
        trials: Sequence[TrialRecord],
        free: int,
        ladders: RungLadders | None = None,
        holders: Sequence[TrialRecord] | None = None,
    ) -> list[tuple[TrialRecord, int]]:
        return []

    def most_promotions(
        self, trials: Sequence[TrialRecord], ladders: RungLadders, holders: Sequence[TrialRecord]
    ) -> int | None:
        return 0


def rung_resources(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """[r, rη, rη², …, R]: geometric rungs from min to max, the top one being max itself.

    When max is not an exact power step away, the rung just below it is dropped rather
    than leaving two nearly equal rungs (1, 3, 9, 10 becomes 1, 3, 10).
    """
    top = math.floor(math.log(max_resource / min_resource, reduction_factor) + 1e-9)
    rungs = [min_resource * reduction_factor**k for k in range(top)]
    return [*rungs, max_resource]


def ranking_key(sign: float) -> Callable[[tuple[TrialRecord, float]], tuple[float, int]]:
    """Best first; ties broken by trial number so the order is deterministic."""
    return lambda item: (sign * item[1], item[0].number)


def stop_at_max(step: int, max_resource: int | None) -> Verdict | None:
    if max_resource is not None and step >= max_resource:
        return Verdict(Decision.STOP, "reached maxResource", TrialPhase.COMPLETED)
    return None


def is_milestone(step: int) -> bool:
    """Every step below 100, then steps with at most two significant digits (100, 110, …,
    990, 1000, 1100, …): about 90 a decade.

    Median stopping decides at these steps only, and the operator's stored history always
    keeps their reports, so a restarted operator sees every value a decision looked at.
    """
    if step < 100:
        return True
    return step % 10 ** (len(str(step)) - 2) == 0
