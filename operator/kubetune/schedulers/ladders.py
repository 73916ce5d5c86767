"""Each rung's trials ranked best first, kept as reports reach rungs: what ASHA reads to
find a promotion. Built from scratch (`of`) it is a pure function of the trial records;
the engine keeps one up to date event by event, so that a promotion neither sorts every
trial again nor walks past the many top trials promoted long ago (at 10,000 trials that
sort and walk, per free slot and rung, were most of a decision's cost)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence

from kubetune.trials import TrialPhase, TrialRecord

Entry = tuple[float, int]  # (sign * rung value, trial number): ascending is best first


class RungLadders:
    """Per rung, every trial that reached it (`base.ranking_key`'s order, failed trials
    left out), and apart from those the trials whose highest rung it is: the only ones
    a promotion from it can take."""

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self._rungs: dict[int, list[Entry]] = {}
        self._tops: dict[int, list[Entry]] = {}
        self._top_of: dict[int, int] = {}  # trial number -> its highest rung
        self._trials: dict[int, TrialRecord] = {}

    @classmethod
    def of(cls, trials: Sequence[TrialRecord], sign: float) -> RungLadders:
        ladders = cls(sign)
        for trial in trials:
            if trial.phase is not TrialPhase.FAILED:
                for rung, value in trial.rung_values.items():
                    ladders.add(trial, rung, value)
        return ladders

    def add(self, trial: TrialRecord, rung: int, value: float) -> None:
        """`trial` reached `rung` with `value` (its first value there)."""
        insort(self._rungs.setdefault(rung, []), (self.sign * value, trial.number))
        self._trials[trial.number] = trial
        top = self._top_of.get(trial.number)
        if top is not None and top >= rung:
            return
        if top is not None:
            _remove(self._tops[top], (self.sign * trial.rung_values[top], trial.number))
        self._top_of[trial.number] = rung
        insort(self._tops.setdefault(rung, []), (self.sign * value, trial.number))

    def drop(self, trial: TrialRecord) -> None:
        """Take a trial that failed off every rung."""
        for rung, value in trial.rung_values.items():
            _remove(self._rungs.get(rung, []), (self.sign * value, trial.number))
        top = self._top_of.pop(trial.number, None)
        if top is not None:
            _remove(self._tops[top], (self.sign * trial.rung_values[top], trial.number))
        self._trials.pop(trial.number, None)

    def size(self, rung: int) -> int:
        return len(self._rungs.get(rung, ()))

    def promotable(self, rung: int, quota: int) -> Iterator[TrialRecord]:
        """The trials among the `quota` best at `rung` whose highest rung it is, best
        first (whether one is paused, and so can go on, is the caller's question)."""
        ladder = self._rungs.get(rung, [])
        for entry in self._tops.get(rung, []):
            if bisect_left(ladder, entry) >= quota:
                return
            yield self._trials[entry[1]]

    def entries(self) -> dict[str, dict[int, list[Entry]]]:
        """What it holds (for tests that compare a kept ladder with a built one)."""
        return {
            "rungs": {r: list(ladder) for r, ladder in self._rungs.items() if ladder},
            "tops": {r: list(ladder) for r, ladder in self._tops.items() if ladder},
        }


def _remove(ladder: list[Entry], entry: Entry) -> None:
    index = bisect_left(ladder, entry)
    if index < len(ladder) and ladder[index] == entry:
        del ladder[index]
