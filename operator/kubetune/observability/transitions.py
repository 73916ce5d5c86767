"""What happened to an experiment's trials since the last look: pauses, promotions, ends.

The engine keeps state, not a feed of changes, and the shells call it from many places.
A `TrialWatcher` compares the engine's trials with what it saw the previous time and
names the changes, for the event metrics (durations, ends, promotions) and for the
Kubernetes Events users read. The first look at an engine only remembers it: an
operator that restarts and replays a long history must not count every old trial again.

Pure: no Prometheus, no Kubernetes, so local mode without the `operator` extra uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from kubetune.engine import NOT_PROMOTED, Engine
from kubetune.events import TrialPromoted, touched_trials
from kubetune.trials import Decision, TrialPhase, TrialRecord


class Change(StrEnum):
    PAUSED = "paused"
    PROMOTED = "promoted"
    INTERRUPTED = "interrupted"
    ENDED = "ended"  # reached a final phase: Completed, Stopped or Failed


@dataclass(frozen=True)
class _Seen:
    phase: TrialPhase
    interruptions: int
    ended_attempts: int


@dataclass(frozen=True)
class Transition:
    change: Change
    trial: TrialRecord
    objective: str = ""

    @property
    def phase(self) -> TrialPhase:
        return self.trial.phase

    @property
    def duration_seconds(self) -> float:
        """Time the trial ran, summed over its ended attempts (time paused excluded)."""
        total = 0.0
        for attempt in self.trial.attempts:
            if attempt.started_at is not None and attempt.ended_at is not None:
                total += max(attempt.ended_at - attempt.started_at, 0.0)
        return total

    def event(self) -> tuple[str, str, bool] | None:
        """(reason, message, warning) of the Kubernetes Event users care about, if any.

        Early stops are left out: the operator posts `TrialStopped` when it asks a pod to
        stop, and a trial that was never promoted ends Stopped with every experiment.
        """
        trial = self.trial
        match self.change:
            case Change.PAUSED:
                at = f" at step {trial.last_step}" if trial.last_step is not None else ""
                why = f": {trial.reason}" if trial.reason else ""
                return "TrialPaused", f"Trial {trial.name} paused{at}{why}", False
            case Change.PROMOTED:
                attempt = trial.attempt
                target = attempt.target if attempt and trial.phase is TrialPhase.RUNNING else None
                target = target if target is not None else trial.next_target
                to = f" to step {target}" if target is not None else ""
                return "TrialPromoted", f"Trial {trial.name} promoted{to}", False
            case Change.INTERRUPTED:
                message = f"Trial {trial.name} was interrupted ({trial.interruptions} so far)"
                return "TrialInterrupted", f"{message}; it resumes from its checkpoint", True
            case Change.ENDED if trial.phase is TrialPhase.FAILED:
                return "TrialFailed", f"Trial {trial.name} failed: {trial.reason}", True
            case Change.ENDED if trial.phase is TrialPhase.COMPLETED:
                value = trial.value
                shown = f"{value:.6g}" if value is not None and math.isfinite(value) else "-"
                message = f"Trial {trial.name} completed: {self.objective}={shown}"
                return "TrialCompleted", message, False
        return None


class TrialWatcher:
    """Changes in one experiment's trials between two calls of `update`.

    Between two calls a trial may pause and be promoted and relaunched, so phases alone
    do not tell: pauses are read from the attempts that ended (their last decision),
    promotions from the `TrialPromoted` events appended to the history, interruptions
    from the trial's count, and ends from the phase.
    """

    def __init__(self) -> None:
        self._engine_id: int | None = None
        self._history = 0
        self._seen: dict[int, _Seen] = {}

    def update(self, engine: Engine) -> list[Transition]:
        first = self._engine_id != id(engine)
        self._engine_id = id(engine)
        promoted: dict[int, int] = {}
        # A new engine (a load) is looked at whole; its events before now are not read,
        # and may have been let go already (eventlog.py).
        new = [] if first else engine.history[self._history :]
        for event in new:
            if isinstance(event, TrialPromoted):
                promoted[event.number] = promoted.get(event.number, 0) + 1
        self._history = len(engine.history)
        changes: list[Transition] = []
        objective = engine.spec.objective.metric
        # Only the trials the new events name can have changed (or any, after one that
        # moves many): at 10,000 trials, looking at each on every report was milliseconds.
        touched = None if first else touched_trials(new)
        looked = (
            engine.trials
            if touched is None
            else [engine.trials[n] for n in sorted(touched) if 0 <= n < len(engine.trials)]
        )
        for trial in looked:
            ended = sum(a.ended_at is not None for a in trial.attempts)
            now = _Seen(trial.phase, trial.interruptions, ended)
            before = self._seen.get(trial.number)
            self._seen[trial.number] = now
            if first or (before == now and trial.number not in promoted):
                continue
            before = before or _Seen(TrialPhase.SAMPLING, 0, 0)

            def change(kind: Change, trial: TrialRecord = trial) -> None:
                changes.append(Transition(kind, trial, objective))

            for index in range(before.ended_attempts, ended):
                if _paused(trial, index):
                    change(Change.PAUSED)
            for _ in range(promoted.get(trial.number, 0)):
                change(Change.PROMOTED)
            for _ in range(now.interruptions - before.interruptions):
                change(Change.INTERRUPTED)
            if now.phase.is_final and not before.phase.is_final:
                change(Change.ENDED)
        if first:
            return []
        for number in [n for n in self._seen if n >= len(engine.trials)]:
            del self._seen[number]  # the search ran out before these were sampled
        return changes


def _paused(trial: TrialRecord, index: int) -> bool:
    """Whether attempt `index` of the trial ended with a pause (a checkpoint at a rung)."""
    verdict = trial.attempts[index].decision
    if verdict is None or verdict.decision is not Decision.PAUSE:
        return False
    if index < len(trial.attempts) - 1:
        return True  # relaunched afterwards: only a paused trial is promoted and relaunched
    # The last attempt: a stop the experiment asked for wins over the pause, but a trial
    # paused and then left behind when the experiment ended did pause.
    return not trial.phase.is_final or trial.reason == NOT_PROMOTED
