"""How many Kubernetes Events an experiment posts: a budget per reason, as client-go's
recorder keeps one per object (its spam filter: a burst of 25, then one every five
minutes; its aggregator folds similar Events into one that counts them).

Events are for people (`kubectl describe hpoexperiment`), and every one is a write to
the API server and etcd. A trial's start, its rung and its stop post one each: at 200
running trials, about 36 Events a second, as many writes as the trials' own HPOTrials
and pods together (bench/scale.py). Each reason may post `burst` Events at once, then
one every `interval` seconds; the Events beyond are held, not lost: the latest of them
is posted when the budget allows, with `count` the number it stands for and its first
time the first one's, which `kubectl describe` shows as "x37 over 2m" (and at once when
the operator stops: `Experiment.post_held_events`; those of a deleted experiment are
dropped with it). A rare reason (a failure, the experiment's end) is never held behind
a frequent one.

Pure bookkeeping on a clock the caller passes; `Experiment.event` does the posting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubetune.operator.settings import env_seconds

EVENT_BURST = 25  # client-go's
# At most client-go's five minutes: a longer one would hold Events for good.
EVENT_INTERVAL_SECONDS = env_seconds(
    "KUBETUNE_EVENT_INTERVAL_SECONDS", 10.0, positive=True, at_most=300.0
)


@dataclass
class HeldEvents:
    """Events of one reason not posted yet: how many, the latest's message and type,
    and when the first of them happened (wall clock)."""

    count: int
    message: str
    warning: bool
    since: float


@dataclass
class EventBudget:
    burst: int = EVENT_BURST
    interval: float = EVENT_INTERVAL_SECONDS
    # Per reason: the tokens left and the (monotonic) time they were counted at.
    tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    held: dict[str, HeldEvents] = field(default_factory=dict)

    def _left(self, reason: str, now: float) -> float:
        tokens, at = self.tokens.get(reason, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.interval)

    def admit(self, reason: str, now: float) -> bool:
        """Whether an Event of `reason` may be posted now (and counted as posted). Not
        while some are held: they go first, so the Events keep their order."""
        if reason in self.held:
            return False
        left = self._left(reason, now)
        if left < 1.0:
            return False
        self.tokens[reason] = (left - 1.0, now)
        return True

    def hold(self, reason: str, message: str, warning: bool, wall: float) -> bool:
        """Keep an Event the budget refused. True for the first one held, when the
        caller must post them at `due` (later ones are folded into it)."""
        held = self.held.get(reason)
        if held is None:
            self.held[reason] = HeldEvents(1, message, warning, wall)
            return True
        held.count += 1
        held.message, held.warning = message, warning
        return False

    def due(self, reason: str, now: float) -> float:
        """Seconds from `now` until an Event of `reason` may be posted."""
        return max(0.0, (1.0 - self._left(reason, now)) * self.interval)

    def release(self, reason: str, now: float) -> HeldEvents | None:
        """The Events held for `reason`, to be posted now as one (its token taken)."""
        held = self.held.pop(reason, None)
        if held is not None:
            self.tokens[reason] = (self._left(reason, now) - 1.0, now)
        return held
