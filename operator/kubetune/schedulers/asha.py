"""Asynchronous successive halving, promotion-based (Li et al., "A System for Massively
Parallel Hyperparameter Tuning", MLSys 2020, algorithm 2).

A trial trains to rung 0 and pauses there. Whenever a slot frees up, the highest rung
with a trial in its top 1/η that was not promoted yet gives that trial up for promotion:
it resumes from its checkpoint and trains to the next rung. Only when nothing is
promotable does a new trial start. No one waits for a rung to fill.

The paper's ASHA runs until a deadline; ours also ends after `maxTrials`. Once every
trial exists and nothing is promotable by the rule above, a rung that no training trial
can still join promotes its best trial even when it holds fewer than η (⌊n/η⌋ = 0), as
SHA's brackets promote at least one: otherwise an experiment of, say, 24 trials with
rungs 1, 3, 9, 27 would train no one to 27.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kubetune.schedulers.base import stop_at_max
from kubetune.schedulers.ladders import RungLadders
from kubetune.trials import Decision, TrialPhase, TrialRecord, Verdict


class ASHA:
    def __init__(
        self,
        rungs: Sequence[int],
        reduction_factor: int,
        sign: float,
        max_trials: int | None = None,
    ) -> None:
        self.rungs = list(rungs)
        self.eta = reduction_factor
        self.sign = sign
        self.max_trials = max_trials
        self.max_resource: int | None = self.rungs[-1]

    def bracket(self, number: int) -> int:
        return 0

    def initial_target(self, number: int) -> int | None:
        return self.rungs[0]

    def rung_index(self, step: int) -> int | None:
        reached = [k for k, resource in enumerate(self.rungs) if step >= resource]
        return reached[-1] if reached else None

    def on_report(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> tuple[Verdict, int | None]:
        rung = self.rung_index(step)
        done = stop_at_max(step, self.max_resource)
        if done is not None:
            return done, rung
        attempt = trial.attempt
        if attempt is not None and attempt.target is not None and step >= attempt.target:
            assert rung is not None, "an attempt's target is a rung"
            return Verdict(Decision.PAUSE, f"reached rung {rung} ({self.rungs[rung]})"), rung
        return Verdict.go_on(), rung

    def must_keep(self, step: int) -> bool:
        return False  # decisions read rung reports only, and those are marked with their rung

    def promotions(
        self,
        trials: Sequence[TrialRecord],
        free: int,
        ladders: RungLadders | None = None,
        holders: Sequence[TrialRecord] | None = None,
    ) -> list[tuple[TrialRecord, int]]:
        """`ladders` and `holders`: the engine's up-to-date `RungLadders` of `trials`, and
        the trials that hold a slot (both found here when not given)."""
        if free <= 0:
            return []
        ranked = ladders if ladders is not None else RungLadders.of(trials, self.sign)
        chosen: list[tuple[TrialRecord, int]] = []
        taken: set[int] = set()
        closed: float | None = None  # computed once, and only when needed
        for _ in range(free):
            found = self._scan(ranked, taken, None)
            if found is None and self.max_trials is not None and len(trials) >= self.max_trials:
                if closed is None:
                    closed = _closed_up_to(
                        [t for t in trials if t.phase.holds_slot] if holders is None else holders
                    )
                found = self._scan(ranked, taken, closed)
            if found is None:
                break
            chosen.append(found)
            taken.add(found[0].number)
        return chosen

    def most_promotions(
        self, trials: Sequence[TrialRecord], ladders: RungLadders, holders: Sequence[TrialRecord]
    ) -> int:
        """The paused trials within their rung's quota now (at least one: `_scan`'s rule
        for a rung no one else can join). A trial that reaches a rung later grows its
        quota by at most one, and pauses or ends there, freeing the slot that promotion
        takes: the slots held never grow by it. Ranks only fall as trials arrive, so a
        paused trial outside its quota now never holds a slot again. Only a failure,
        taking a trial off its rungs, lifts the others a place (the capacity loop's cost
        of that: a node booted again)."""
        return sum(
            trial.phase is TrialPhase.PAUSED
            for rung in range(len(self.rungs) - 1)
            for trial in ladders.promotable(rung, max(ladders.size(rung) // self.eta, 1))
        )

    def _scan(
        self, ladders: RungLadders, taken: set[int], closed: float | None
    ) -> tuple[TrialRecord, int] | None:
        """`closed`: every trial exists, and no trial in training can still join a rung
        up to this one: each such rung promotes at least one."""
        for rung in range(len(self.rungs) - 2, -1, -1):
            quota = ladders.size(rung) // self.eta
            if closed is not None and rung <= closed:
                quota = max(quota, 1)  # no one else will join this rung
            for trial in ladders.promotable(rung, quota):
                if trial.phase is TrialPhase.PAUSED and trial.number not in taken:
                    return trial, self.rungs[rung + 1]
        return None


def _closed_up_to(holders: Sequence[TrialRecord]) -> float:
    """The highest rung that no trial holding a slot can still join: the lowest rung such
    a trial has reached (-1: one has reached none), every rung when none holds a slot."""
    reached = [max(t.rung_values, default=-1) for t in holders]
    return min(reached, default=math.inf)
