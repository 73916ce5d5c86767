"""The engine's record of one trial: its phase, attempts and the values it reported.

Schedulers read these records (they never change them); the engine is their only writer.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubetune.space import Params


class TrialPhase(StrEnum):
    SAMPLING = "Sampling"  # number reserved, parameters being suggested
    PENDING = "Pending"  # waiting to be launched (new, promoted or interrupted)
    RUNNING = "Running"
    PAUSED = "Paused"  # checkpointed at a rung, may be promoted
    COMPLETED = "Completed"  # trained to the end
    STOPPED = "Stopped"  # stopped early by the scheduler or the budget
    FAILED = "Failed"

    @property
    def is_final(self) -> bool:
        return self in (TrialPhase.COMPLETED, TrialPhase.STOPPED, TrialPhase.FAILED)

    @property
    def holds_slot(self) -> bool:
        return self in (TrialPhase.SAMPLING, TrialPhase.PENDING, TrialPhase.RUNNING)


class Decision(StrEnum):
    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scheduler's answer to a report. `final` is the phase a stop leads to."""

    decision: Decision
    reason: str = ""
    final: TrialPhase | None = None
    # The shell's answer only, never recorded: a pause because the trial's node is being
    # reclaimed (operator/notices.py): checkpoint now, exit, and resume elsewhere.
    checkpoint_and_exit: bool = False
    # The shell's answer only, never recorded: False when the report was taken but is
    # not durable yet (operator/writes.py); the SDK sends it again with `flush` at exit.
    durable: bool = True

    @staticmethod
    def go_on() -> Verdict:
        return GO_ON


# One object for the verdict most reports get: the engine keeps every report's verdict.
GO_ON = Verdict(Decision.CONTINUE)


@dataclass(slots=True)
class Answers:
    """The verdict each report of a trial got, kept to answer a report sent again with the
    same verdict (the engine is idempotent per trial, attempt and step).

    Almost every report gets GO_ON at steps that follow one another (every step, or
    every N steps): an attempt's steps are held as one run (first step, last step,
    stride) for as long as they do, and any other answer in a dict, as all were before:
    a dict entry per report was about 100 bytes, 3.5 KB a trial at bench/scale.py's
    shape and a third of what the engine held per trial once its history is let go
    (eventlog.py). Lookups stay O(1) whatever the steps.
    """

    # attempt -> [first, last, stride] of its steps that went on in a run (stride 0
    # while the run is one step)
    runs: dict[int, list[int]] = field(default_factory=dict)
    other: dict[tuple[int, int], Verdict] = field(default_factory=dict)

    def get(self, key: tuple[int, int]) -> Verdict | None:
        found = self.other.get(key)
        if found is not None:
            return found
        attempt, step = key
        run = self.runs.get(attempt)
        if run is not None and _in_run(run, step):
            return GO_ON
        return None

    def __setitem__(self, key: tuple[int, int], verdict: Verdict) -> None:
        attempt, step = key
        run = self.runs.get(attempt)
        if verdict == GO_ON:
            if run is None:
                self.runs[attempt] = [step, step, 0]
                return
            first, last, stride = run
            if step > last and stride == 0:
                run[1], run[2] = step, step - first
                return
            if step == last + stride and stride > 0:
                run[1] = step
                return
            if _in_run(run, step):
                self.other.pop(key, None)
                return
        self.other[key] = verdict  # read before the run: the later answer wins


def _in_run(run: list[int], step: int) -> bool:
    first, last, stride = run
    return first <= step <= last and (step == first or (step - first) % stride == 0)


@dataclass(slots=True)
class Attempt:
    number: int
    resume: bool
    target: int | None  # resource step at which the scheduler will pause or stop it
    first_step: int | None = None
    last_step: int | None = None
    trained_from: int = 0  # the step its training started after (set with first_step)
    decision: Verdict | None = None  # the last non-continue verdict given to this attempt
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def consumed(self) -> int:
        """Resource steps this attempt trained, from where it started (not from its first
        report: a trial reporting every 5 epochs trained 5 before its first report)."""
        if self.first_step is None or self.last_step is None:
            return 0
        return self.last_step - self.trained_from


def _start_base(attempts: list[Attempt]) -> int:
    """Where the last of `attempts` starts if its first report is past it: 0 for a fresh
    attempt, where its predecessors stopped for a resumed one."""
    reached = [a.last_step for a in attempts[:-1] if a.last_step is not None]
    return max(reached) if attempts[-1].resume and reached else 0


def trained_from(attempts: list[Attempt], first_step: int) -> int:
    """The step the last of `attempts` started training after, given its first report.

    A fresh attempt starts at 0. A resumed one starts where its predecessors stopped,
    unless its first report is not past that (it resumed from an older checkpoint, or
    from none): then it is taken to have started just before that report.
    """
    base = _start_base(attempts)
    return base if first_step > base else first_step - 1


def start_read_from(attempts: list[Attempt], first_step: int) -> bool:
    """Whether `trained_from` of the last of `attempts` depends on which of its reports
    is its first: only then does a decision (the cost per step, `Attempt.consumed`) read
    the first report, and only then must it be durable before it is answered. A fresh
    attempt's first report past step 0, or a resumed one's past where its predecessors
    stopped, gives the same start as any later report would."""
    return first_step <= _start_base(attempts)


class StepValues(MutableMapping[int, float]):
    """A trial's objective value by step, held as two arrays in step order.

    A dict of a trial's ~30 reported steps took about 1.9 KB with its int and float
    objects (2.4 KB past step 256), these arrays about 0.8 KB: kept for every trial of
    the experiment, that was 11-16 MB of the operator's memory at 10,000 trials
    (bench/scale.py). Steps almost always come in increasing order and are appended; a
    step reported again, or an older one after a resume from an older checkpoint, is
    found by bisection.
    """

    __slots__ = ("_steps", "_values")

    def __init__(self, items: Mapping[int, float] | None = None) -> None:
        self._steps = array("q")
        self._values = array("d")
        for step, value in sorted((items or {}).items()):
            self[step] = value

    def _index(self, step: int) -> int | None:
        index = bisect_left(self._steps, step)
        return index if index < len(self._steps) and self._steps[index] == step else None

    def __getitem__(self, step: int) -> float:
        index = self._index(step)
        if index is None:
            raise KeyError(step)
        return self._values[index]

    def __setitem__(self, step: int, value: float) -> None:
        steps = self._steps
        if not steps or step > steps[-1]:
            steps.append(step)
            self._values.append(value)
            return
        index = bisect_left(steps, step)
        if steps[index] == step:
            self._values[index] = value
        else:
            steps.insert(index, step)
            self._values.insert(index, value)

    def __delitem__(self, step: int) -> None:
        index = self._index(step)
        if index is None:
            raise KeyError(step)
        del self._steps[index]
        del self._values[index]

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and self._index(step) is not None

    def __iter__(self) -> Iterator[int]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"StepValues({dict(self.items())!r})"

    @property
    def last_step(self) -> int | None:
        return self._steps[-1] if self._steps else None


@dataclass(slots=True)
class TrialRecord:
    number: int
    name: str
    bracket: int = 0
    params: Params = field(default_factory=dict)
    sampler_attrs: dict[str, Any] = field(default_factory=dict)
    phase: TrialPhase = TrialPhase.SAMPLING
    reason: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    # Objective value by step, the latest attempt's value winning when steps repeat.
    values: StepValues = field(default_factory=StepValues)
    last_metrics: dict[str, float] = field(default_factory=dict)
    # Rung index -> objective value when the trial first reached that rung.
    rung_values: dict[int, float] = field(default_factory=dict)
    # Resource the next attempt trains to (the rung it was promoted to).
    next_target: int | None = None
    interruptions: int = 0
    decisions: Answers = field(default_factory=Answers)
    # Population-based training: the member this trial replaced, the trial whose
    # checkpoint at `from_step` it started from, and the trial that replaced this one.
    replaces: int | None = None
    parent: int | None = None
    from_step: int | None = None
    replaced_by: int | None = None

    @property
    def attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def last_step(self) -> int | None:
        return self.values.last_step

    @property
    def value(self) -> float | None:
        """The objective at the furthest step reached: what the trial is ranked by."""
        step = self.last_step
        return None if step is None else self.values[step]

    @property
    def resource(self) -> int:
        return sum(a.consumed for a in self.attempts)

    @property
    def started_at(self) -> float | None:
        return self.attempts[0].started_at if self.attempts else None

    @property
    def ended_at(self) -> float | None:
        return self.attempts[-1].ended_at if self.phase.is_final and self.attempts else None


class PhaseIndex:
    """The trials in each phase, kept in step with every phase change (the engine calls
    `update` after each event it applies), so that a decision reads the few trials that
    hold a slot instead of scanning every trial on every report: at 10,000 trials that
    scan was most of the cost of a report."""

    def __init__(self) -> None:
        self._phase: dict[int, TrialPhase] = {}
        self._members: dict[TrialPhase, dict[int, TrialRecord]] = {p: {} for p in TrialPhase}

    def update(self, trial: TrialRecord) -> bool:
        """File `trial` under its phase; True when that phase is new for it."""
        old = self._phase.get(trial.number)
        if old is trial.phase:
            return False
        if old is not None:
            self._members[old].pop(trial.number, None)
        self._phase[trial.number] = trial.phase
        self._members[trial.phase][trial.number] = trial
        return old is not trial.phase

    def rebuild(self, trials: Sequence[TrialRecord]) -> None:
        self._phase.clear()
        for members in self._members.values():
            members.clear()
        for trial in trials:
            self.update(trial)

    def members(self, *phases: TrialPhase) -> list[TrialRecord]:
        """The trials in any of `phases`, by number."""
        found = [t for phase in phases for t in self._members[phase].values()]
        return sorted(found, key=lambda t: t.number)

    def count(self, *phases: TrialPhase) -> int:
        return sum(len(self._members[phase]) for phase in phases)


SLOT_PHASES = tuple(p for p in TrialPhase if p.holds_slot)
