"""Synchronous successive halving, and Hyperband as brackets of it (Li et al., JMLR 2018).

A bracket of n trials starts them all at its first rung. When every trial expected at a
rung has reached it (or ended), the best ⌊n/η^k⌋ are promoted: they resume from their
checkpoints and train to the next rung. The rest stay paused and end as Stopped when the
experiment completes. Trials waiting for their rung to fill are paused, not idling on a
GPU.

Hyperband runs brackets s = K, K-1, …, 0 (K+1 rungs), bracket s with ⌈(K+1)/(s+1)·η^s⌉
trials starting at rung K-s, repeating the cycle until `maxTrials` trials exist (the
last bracket truncated). SHA is a single bracket of `maxTrials` trials starting at rung 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kubetune.schedulers.base import ranking_key, stop_at_max
from kubetune.schedulers.ladders import RungLadders
from kubetune.trials import Decision, TrialPhase, TrialRecord, Verdict


@dataclass(frozen=True)
class Bracket:
    first_trial: int
    size: int
    first_rung: int
    eta: int

    def capacity(self, rung: int) -> int:
        """How many trials this bracket promotes into `rung`: ⌊n/η^k⌋, at least one."""
        return max(1, self.size // self.eta ** (rung - self.first_rung))


def hyperband_brackets(rung_count: int, eta: int, max_trials: int) -> list[Bracket]:
    top = rung_count - 1
    sizes = [(math.ceil((top + 1) / (s + 1) * eta**s), top - s) for s in range(top, -1, -1)]
    brackets: list[Bracket] = []
    start = 0
    while start < max_trials:
        for size, first_rung in sizes:
            size = min(size, max_trials - start)
            if size <= 0:
                break
            brackets.append(Bracket(start, size, first_rung, eta))
            start += size
    return brackets


class SuccessiveHalving:
    def __init__(
        self, rungs: Sequence[int], reduction_factor: int, sign: float, brackets: list[Bracket]
    ) -> None:
        self.rungs = list(rungs)
        self.eta = reduction_factor
        self.sign = sign
        self.brackets = brackets
        self.max_resource: int | None = self.rungs[-1]

    def bracket(self, number: int) -> int:
        for index, bracket in enumerate(self.brackets):
            if bracket.first_trial <= number < bracket.first_trial + bracket.size:
                return index
        return len(self.brackets) - 1

    def initial_target(self, number: int) -> int | None:
        return self.rungs[self.brackets[self.bracket(number)].first_rung]

    def on_report(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> tuple[Verdict, int | None]:
        first_rung = self.brackets[trial.bracket].first_rung
        reached = [k for k in range(first_rung, len(self.rungs)) if step >= self.rungs[k]]
        rung = reached[-1] if reached else None
        done = stop_at_max(step, self.max_resource)
        if done is not None:
            return done, rung
        attempt = trial.attempt
        if attempt is not None and attempt.target is not None and step >= attempt.target:
            return Verdict(Decision.PAUSE, f"waiting for rung {rung} to fill"), rung
        return Verdict.go_on(), rung

    def must_keep(self, step: int) -> bool:
        return False  # decisions read rung reports only, and those are marked with their rung

    def most_promotions(
        self, trials: Sequence[TrialRecord], ladders: RungLadders, holders: Sequence[TrialRecord]
    ) -> int | None:
        return None  # not bounded yet: brackets fill and promote synchronously

    def promotions(
        self,
        trials: Sequence[TrialRecord],
        free: int,
        ladders: RungLadders | None = None,
        holders: Sequence[TrialRecord] | None = None,
    ) -> list[tuple[TrialRecord, int]]:
        chosen: list[tuple[TrialRecord, int]] = []
        for index, bracket in enumerate(self.brackets):
            members = [t for t in trials if t.bracket == index]
            for trial, target in self._bracket_promotions(bracket, members):
                if len(chosen) == free:
                    return chosen
                chosen.append((trial, target))
        return chosen

    def _bracket_promotions(
        self, bracket: Bracket, members: Sequence[TrialRecord]
    ) -> list[tuple[TrialRecord, int]]:
        if len(members) < bracket.size:
            return []  # the first rung is not even populated yet
        for rung in range(bracket.first_rung, len(self.rungs) - 1):
            expected = [t for t in members if self._expected_at(t, rung, bracket)]
            arrived = [t for t in expected if rung in t.rung_values]
            if any(not t.phase.is_final and rung not in t.rung_values for t in expected):
                return []  # rung still filling: synchronous SHA waits
            ranked = sorted(
                ((t, t.rung_values[rung]) for t in arrived if t.phase is not TrialPhase.FAILED),
                key=ranking_key(self.sign),
            )
            winners = [t for t, _ in ranked[: bracket.capacity(rung + 1)]]
            pending = [
                t for t in winners if t.phase is TrialPhase.PAUSED and max(t.rung_values) == rung
            ]
            if pending:
                return [(t, self.rungs[rung + 1]) for t in pending]
        return []

    def _expected_at(self, trial: TrialRecord, rung: int, bracket: Bracket) -> bool:
        if rung == bracket.first_rung:
            return True
        return any(k >= rung for k in trial.rung_values) or (
            (trial.next_target or 0) >= self.rungs[rung]
            or any((a.target or 0) >= self.rungs[rung] for a in trial.attempts)
        )
