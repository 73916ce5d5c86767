"""Launches whose pods the API server refused for an exceeded quota: each waits and is
tried again after a back-off, until its attempt is over (pure bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.engine import Engine, LaunchTrial
from kubetune.trials import TrialPhase

# A pod refused for an exceeded quota is created again after this many seconds, doubled
# at each refusal up to QUOTA_RETRY_MAX_SECONDS.
QUOTA_RETRY_SECONDS = 5.0
QUOTA_RETRY_MAX_SECONDS = 300.0


@dataclass
class QuotaWait:
    action: LaunchTrial
    refusals: int
    retry_at: float


class QuotaWaits:
    def __init__(self) -> None:
        self.waits: dict[int, QuotaWait] = {}

    def refused(
        self, action: LaunchTrial, now: float, max_delay: float = QUOTA_RETRY_MAX_SECONDS
    ) -> float:
        """One more refusal of `action`'s pod: the seconds until it is tried again (a
        gang waiting for room on its node pool asks every QUOTA_RETRY_SECONDS)."""
        wait = self.waits.get(action.number)
        refusals = (wait.refusals if wait else 0) + 1
        delay = min(QUOTA_RETRY_SECONDS * 2 ** (refusals - 1), max_delay)
        self.waits[action.number] = QuotaWait(action, refusals, now + delay)
        return delay

    def pop(self, number: int, attempt: int) -> QuotaWait | None:
        """Trial `number`'s attempt no longer waits (its pod was created, or it was
        stopped); a wait of another attempt of the trial stays."""
        wait = self.waits.get(number)
        if wait is None or wait.action.attempt != attempt:
            return None
        return self.waits.pop(number)

    def due(self, engine: Engine, now: float) -> list[LaunchTrial]:
        """Launches whose back-off is over; those whose attempt is over are dropped."""
        due = []
        for number, wait in list(self.waits.items()):
            trial = engine.trials[number]
            attempt = trial.attempt
            if (
                trial.phase is not TrialPhase.RUNNING
                or attempt is None
                or (attempt.number != wait.action.attempt)
            ):
                del self.waits[number]  # that attempt is over
            elif wait.retry_at <= now:
                due.append(wait.action)
        return due
