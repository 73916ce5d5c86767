"""The engine: a pure, deterministic fold over an experiment's history.

It knows no processes, pods, HTTP or clock. Shells (the local runner, the operator)
feed it what happened (`report`, `attempt_ended`, `record_suggestion`) with the time,
and ask it what to do next (`decide`). Every decision it takes is appended to its
history as an event *before* it is returned, so `Engine.replay(spec, history)` rebuilds
an engine that is in the same state and decides exactly as the original would have.

The one slow step, sampling a configuration, is not done here: `decide` asks for it
with a `SampleTrial` action, the shell calls `samplers.suggest(*engine.sampler_request(n))`
off its event loop, and hands the result back with `record_suggestion`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune.eventlog import EventLog
from kubetune.events import (
    MOVES_MANY,
    AttemptEnded,
    CostObserved,
    Event,
    ExitKind,
    ExperimentEnded,
    ExperimentReopened,
    ExperimentStarted,
    Reported,
    SearchExhausted,
    StopRequested,
    TrialExploited,
    TrialLaunched,
    TrialPlanned,
    TrialPromoted,
    TrialSampled,
    WarmStarted,
)
from kubetune.samplers import SamplerState, SamplerTrial, Suggestion, reads_history
from kubetune.schedulers import SchedulerPolicy, make_scheduler
from kubetune.schedulers.ladders import RungLadders
from kubetune.schedulers.pbt import EXPLOITED, PBT
from kubetune.spec import AlgorithmName, ExperimentSpec, WarmStartMode
from kubetune.trials import (
    SLOT_PHASES,
    Attempt,
    Decision,
    PhaseIndex,
    TrialPhase,
    TrialRecord,
    Verdict,
    trained_from,
)


class EngineError(Exception):
    """A request the engine refuses; `status` is the HTTP status a report should get."""

    status = 400


class UnknownTrial(EngineError):
    status = 404


class StaleAttempt(EngineError):
    status = 409


class RankWaits(EngineError):
    """A gang's rank > 0 reported a step that rank 0 has not reported yet (202: the SDK
    asks again shortly)."""

    status = 202


# Reasons an experiment ends, as Kubernetes condition reasons (CamelCase).
MAX_TRIALS_REACHED = "MaxTrialsReached"
SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
MAX_DURATION_REACHED = "MaxDurationReached"
TOO_MANY_FAILED_TRIALS = "TooManyFailedTrials"
NO_RESULTS = "NoTrialReportedObjective"
BUDGET_EXHAUSTED = "BudgetExhausted"
TARGET_REACHED = "TargetReached"
POPULATION_TRAINED = "PopulationTrained"  # pbt: every member trained to maxResource
# A CostObserved event is recorded when the cost grew by this share of maxCostUSD (or
# the price of a trial-hour changed by more than COST_RATE_CHANGE): the history stays
# bounded (about 100 cost events per budget) and decisions lag the cost by under 1%.
COST_STEP = 0.01
COST_RATE_CHANGE = 0.1
NOT_PROMOTED = "not promoted"


@dataclass(frozen=True)
class SampleTrial:
    number: int


@dataclass(frozen=True)
class LaunchTrial:
    number: int
    name: str
    attempt: int
    params: Mapping[str, Any]
    resume: bool
    target: int | None
    # pbt: the trial (name) and step of the checkpoint this trial starts from, when it
    # has none of its own yet (every attempt carries it; the SDK prefers its own).
    parent: str | None = None
    from_step: int | None = None


@dataclass(frozen=True)
class StopTrial:
    number: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class FinishExperiment:
    succeeded: bool
    reason: str
    message: str


Action = SampleTrial | LaunchTrial | StopTrial | FinishExperiment


@dataclass(frozen=True)
class Best:
    number: int
    name: str
    params: Mapping[str, Any]
    value: float
    resource: int


@dataclass
class Engine:
    spec: ExperimentSpec
    experiment: str
    history: EventLog = field(default_factory=EventLog)
    trials: list[TrialRecord] = field(default_factory=list)
    started_at: float | None = None
    ended: ExperimentEnded | None = None
    exhausted: bool = False
    study_attrs: dict[str, Any] = field(default_factory=dict)
    stop_reasons: dict[int, str] = field(default_factory=dict)
    cost_usd: float = 0.0  # the last CostObserved: what the experiment has cost so far
    trial_usd_per_hour: float = 0.0  # and what one trial costs per hour now
    # objective.target was reached (a StopRequested says so): the wind-down goes on even
    # if reports that arrive meanwhile make another trial the best.
    target_reached: bool = False
    # spec.warmStart: the earlier experiments' trials, as read once at the start.
    warm: WarmStarted | None = None
    phases: PhaseIndex = field(default_factory=PhaseIndex, repr=False, compare=False)
    cost_observed: bool = False  # a CostObserved is in the history
    # When a trial last reported, started or ended (metrics: a stalled experiment); kept
    # here because the history's old events may have been let go (eventlog.py).
    last_progress_at: float | None = None

    def __post_init__(self) -> None:
        self.scheduler = self._make_scheduler()
        self.sign = self.spec.objective.sign()
        self.ladders = RungLadders(self.sign)  # kept by _apply, read by ASHA's promotions

    # ----- rebuilding -----------------------------------------------------------------

    @classmethod
    def replay(
        cls,
        spec: ExperimentSpec,
        experiment: str,
        history: Iterable[Event],
        keep_history: bool = True,
    ) -> Engine:
        """`keep_history=False`: each event let go once applied (a caller that has them
        stored already); the history's length still counts them."""
        engine = cls(spec, experiment)
        for event in history:
            engine._apply(event)
            if not keep_history:
                engine.history.release(len(engine.history))
        return engine

    def _make_scheduler(self) -> SchedulerPolicy:
        return make_scheduler(self.spec, len(self.trials) if self.exhausted else None)

    def _record(self, event: Event) -> None:
        self._apply(event)

    def _apply(self, event: Event) -> None:
        self.history.append(event)
        self._apply_event(event)
        if isinstance(event, Reported | AttemptEnded | TrialLaunched):
            self.last_progress_at = event.at
        if isinstance(event, MOVES_MANY):
            # These move phases (none to Failed) and drop unsampled trials: no rung changes.
            self.phases.rebuild(self.trials)
        elif (number := getattr(event, "number", None)) is not None:
            trial = self.trials[number]
            if self.phases.update(trial) and trial.phase is TrialPhase.FAILED:
                self.ladders.drop(trial)

    def _apply_event(self, event: Event) -> None:
        match event:
            case ExperimentStarted(at=at):
                self.started_at = at
            case TrialPlanned(number=number, bracket=bracket, target=target):
                trial = TrialRecord(number, self.trial_name(number), bracket=bracket)
                trial.next_target = target
                self.trials.append(trial)
            case TrialSampled(number=number, params=params, sampler_attrs=attrs, study_attrs=study):
                trial = self.trials[number]
                trial.params, trial.sampler_attrs = dict(params), dict(attrs)
                trial.phase = TrialPhase.PENDING
                self.study_attrs = dict(study)
            case TrialExploited():
                trial = self.trials[event.number]
                trial.params, trial.phase = dict(event.params), TrialPhase.PENDING
                trial.replaces, trial.parent = event.replaces, event.parent
                trial.from_step = event.from_step
                self.trials[event.replaces].replaced_by = event.number
            case SearchExhausted(number=number):
                # Sampling runs in number order, so every trial from here on is unsampled.
                self.exhausted = True
                del self.trials[number:]
                # No more trials will come: SHA and Hyperband brackets sized for maxTrials
                # would wait forever for their first rung to fill.
                self.scheduler = self._make_scheduler()
            case TrialPromoted(number=number, target=target):
                trial = self.trials[number]
                trial.phase, trial.next_target = TrialPhase.PENDING, target
            case TrialLaunched(number=number, attempt=attempt, resume=resume, target=target, at=at):
                trial = self.trials[number]
                trial.attempts.append(Attempt(attempt, resume, target, started_at=at))
                trial.phase = TrialPhase.RUNNING
            case Reported():
                self._apply_report(event)
            case StopRequested(number=number, reason=reason):
                self.stop_reasons[number] = reason
                self.target_reached |= reason == TARGET_REACHED
            case AttemptEnded():
                self._apply_attempt_end(event)
            case CostObserved(usd=usd, trial_usd_per_hour=rate):
                self.cost_usd, self.trial_usd_per_hour = usd, rate
                self.cost_observed = True
            case WarmStarted():
                self.warm = event
            case ExperimentReopened():
                self.ended = None
                for trial in self.trials:
                    if trial.phase is TrialPhase.STOPPED and trial.reason == NOT_PROMOTED:
                        trial.phase, trial.reason = TrialPhase.PAUSED, ""
            case ExperimentEnded():
                self.ended = event
                for trial in self.trials:
                    if trial.phase is TrialPhase.PAUSED:
                        trial.phase, trial.reason = TrialPhase.STOPPED, NOT_PROMOTED
                    elif trial.phase in (TrialPhase.PENDING, TrialPhase.SAMPLING):
                        trial.phase, trial.reason = TrialPhase.STOPPED, event.reason

    def _apply_report(self, event: Reported) -> None:
        trial = self.trials[event.number]
        attempt = trial.attempts[-1]
        trial.decisions[(event.attempt, event.step)] = event.verdict
        trial.last_metrics = dict(event.metrics)
        value = event.metrics.get(self.spec.objective.metric)
        if value is not None and math.isfinite(value):
            trial.values[event.step] = value
            if event.rung is not None and event.rung not in trial.rung_values:
                trial.rung_values[event.rung] = value
                self.ladders.add(trial, event.rung, value)
        if attempt.first_step is None:
            attempt.first_step = event.step
            attempt.trained_from = trained_from(trial.attempts, event.step)
            if trial.from_step is not None:  # pbt: the parent trained the steps before
                attempt.trained_from = max(attempt.trained_from, trial.from_step)
        attempt.last_step = max(attempt.last_step or event.step, event.step)
        if event.verdict.decision is not Decision.CONTINUE:
            attempt.decision = event.verdict

    def _apply_attempt_end(self, event: AttemptEnded) -> None:
        trial = self.trials[event.number]
        attempt = trial.attempts[-1]
        attempt.ended_at = event.at
        verdict = attempt.decision
        if event.number in self.stop_reasons:
            reason = self.stop_reasons.pop(event.number)
            # A trial stopped because it reached the target is done, not cut short.
            done = reason == TARGET_REACHED and self._reaches_target(trial)
            trial.phase = TrialPhase.COMPLETED if done else TrialPhase.STOPPED
            trial.reason = reason
        elif event.kind is ExitKind.REFUSED:
            trial.phase, trial.reason = TrialPhase.FAILED, f"pod refused: {event.message}"
        elif verdict is not None and verdict.decision is Decision.PAUSE:
            trial.phase, trial.reason = TrialPhase.PAUSED, verdict.reason
        elif verdict is not None and verdict.decision is Decision.STOP:
            trial.phase, trial.reason = verdict.final or TrialPhase.STOPPED, verdict.reason
        elif trial.replaced_by is not None:
            # pbt: replaced, though the report that told it so was lost with the operator
            # (see `report`): it ends here, and is not resumed beside its replacement.
            trial.phase, trial.reason = TrialPhase.STOPPED, self._exploited(trial.replaced_by)
        elif event.kind is ExitKind.INTERRUPTED:
            trial.interruptions += 1
            trial.phase, trial.reason = TrialPhase.PENDING, f"interrupted: {event.message}"
            trial.next_target = attempt.target
        elif event.exit_code == 0 and trial.value is not None:
            trial.phase, trial.reason = TrialPhase.COMPLETED, "exited"
        elif event.exit_code == 0:
            trial.phase = TrialPhase.FAILED
            trial.reason = f"exited without reporting {self.spec.objective.metric}"
        else:
            trial.phase = TrialPhase.FAILED
            trial.reason = f"exit code {event.exit_code}" + (
                f": {event.message}" if event.message else ""
            )

    # ----- what shells tell the engine --------------------------------------------------

    def trial_name(self, number: int) -> str:
        return f"{self.experiment}-{number}"

    def trial_by_name(self, name: str) -> TrialRecord:
        prefix = f"{self.experiment}-"
        number = name.removeprefix(prefix)
        if not name.startswith(prefix) or not number.isdigit() or int(number) >= len(self.trials):
            raise UnknownTrial(f"unknown trial {name!r}")
        return self.trials[int(number)]

    def report(
        self,
        number: int,
        attempt: int,
        step: int,
        metrics: Mapping[str, float],
        now: float,
        rank: int = 0,
    ) -> Verdict:
        """Record a report and answer it. Idempotent per (trial, attempt, step). A report
        of a gang's rank > 0 (spec.workers) records nothing: see `rank_decision`."""
        if not 0 <= number < len(self.trials):
            raise UnknownTrial(f"unknown trial {number}")
        if rank > 0:
            return self.rank_decision(number, attempt, step)
        trial = self.trials[number]
        known = trial.decisions.get((attempt, step))
        if known is not None:
            return known
        current = trial.attempt
        if trial.phase is not TrialPhase.RUNNING or current is None or current.number != attempt:
            raise StaleAttempt(
                f"attempt {attempt} of trial {trial.name} is not running (trial is "
                f"{trial.phase.value}, current attempt {current.number if current else None})"
            )
        verdict, rung = self._verdict(trial, step, metrics)
        if rung is not None and rung in trial.rung_values:
            # Only a trial's first value at a rung is its rung value (`_apply_report`): a
            # report past a rung already reached decides nothing, and is marked so, so
            # that it may be written late and thinned (operator/store.decisions_read).
            rung = None
        exploit = None
        if trial.replaced_by is not None and verdict.decision is Decision.CONTINUE:
            # pbt: its replacement is history but this report of the decision is not (the
            # operator died between the two writes): the decision stands, made once.
            verdict = Verdict(Decision.STOP, self._exploited(trial.replaced_by), TrialPhase.STOPPED)
        elif isinstance(self.scheduler, PBT) and verdict.decision is Decision.CONTINUE:
            value = metrics.get(self.spec.objective.metric)
            if value is not None and math.isfinite(value):
                exploit = self.scheduler.exploit(trial, step, value, self.trials)
        if exploit is None:
            self._record(Reported(number, attempt, step, dict(metrics), verdict, rung, now))
            return verdict
        # Replaced: the decision (and the new member's plan) is history before the member
        # stops, and before any process or pod of its replacement exists.
        new = len(self.trials)
        reason = self._exploited_by(new, exploit.donor, exploit.from_step)
        verdict = Verdict(Decision.STOP, reason, TrialPhase.STOPPED)
        self._record(Reported(number, attempt, step, dict(metrics), verdict, rung, now))
        self._record(TrialPlanned(new, 0, self.scheduler.initial_target(new)))
        self._record(
            TrialExploited(new, number, exploit.donor, exploit.from_step, exploit.params, now)
        )
        return verdict

    def _exploited_by(self, new: int, donor: int, from_step: int) -> str:
        """Why a member stops: trial `new` replaces it, from `donor`'s `from_step`."""
        return (
            f"{EXPLOITED}: replaced by {self.trial_name(new)}, from "
            f"{self.trial_name(donor)} at step {from_step}"
        )

    def _exploited(self, new: int) -> str:
        child = self.trials[new]
        assert child.parent is not None and child.from_step is not None, "a replacement"
        return self._exploited_by(new, child.parent, child.from_step)

    def rank_decision(self, number: int, attempt: int, step: int) -> Verdict:
        """The answer to a gang's rank > 0 at `step`: what rank 0's report of that step got
        (rank 0's values count), so every rank pauses or stops at the same step. RankWaits
        until rank 0 has reported it."""
        trial = self.trials[number]
        known = trial.decisions.get((attempt, step))
        if known is not None:
            return known
        current = trial.attempt
        if trial.phase is not TrialPhase.RUNNING or current is None or current.number != attempt:
            raise StaleAttempt(f"attempt {attempt} of trial {trial.name} is not running")
        if current.last_step is not None and current.last_step > step:
            # Rank 0 went on past it (a report no decision reads may not have been kept
            # across an operator restart; one that paused or stopped always is).
            return Verdict.go_on()
        raise RankWaits(f"rank 0 of trial {trial.name} has not reported step {step} yet")

    def _verdict(
        self, trial: TrialRecord, step: int, metrics: Mapping[str, float]
    ) -> tuple[Verdict, int | None]:
        attempt = trial.attempts[-1]
        if self.ended is not None or trial.number in self.stop_reasons:
            return Verdict(Decision.STOP, "experiment is ending", TrialPhase.STOPPED), None
        if attempt.decision is not None:
            return attempt.decision, None  # told already; a trial that goes on hears it again
        value = metrics.get(self.spec.objective.metric)
        if value is None:
            return Verdict.go_on(), None
        if not math.isfinite(value):
            reason = f"{self.spec.objective.metric} is {value}"
            return Verdict(Decision.STOP, reason, TrialPhase.FAILED), None
        return self.scheduler.on_report(trial, step, value, self.trials)

    def attempt_ended(
        self,
        number: int,
        attempt: int,
        kind: ExitKind,
        exit_code: int | None,
        now: float,
        message: str = "",
    ) -> bool:
        """Record the end of an attempt; False (and nothing changes) if it was not running."""
        trial = self.trials[number]
        current = trial.attempt
        if trial.phase is not TrialPhase.RUNNING or current is None or current.number != attempt:
            return False
        self._record(AttemptEnded(number, attempt, kind, exit_code, now, message))
        return True

    def told_to_end(self, number: int) -> bool:
        """Whether the trial's running attempt was told to pause or stop: how it ends is
        decided by the report that told it (`_apply_attempt_end`), whenever and however
        its process or pod ends."""
        attempt = self.trials[number].attempt
        return attempt is not None and attempt.decision is not None

    def update_spec(self, spec: ExperimentSpec) -> None:
        """A new spec whose budget may differ; the frozen fields are checked by the caller."""
        self.spec = spec
        self.scheduler = self._make_scheduler()

    def can_grow(self) -> bool:
        """Whether the current budget allows work beyond where an ended experiment stopped."""
        if self.ended is None or self.exhausted:
            return False
        budget = self.spec.budget
        failed = self.phases.count(TrialPhase.FAILED)
        if budget.maxFailedTrials is not None and failed > budget.maxFailedTrials:
            return False
        if self.ended.reason == TARGET_REACHED:
            return False  # the objective (and its target) cannot change: it would end again
        if budget.maxCostUSD is not None and self.ended.reason == BUDGET_EXHAUSTED:
            return self._next_work_affordable()
        if budget.maxCostUSD is not None and self.cost_usd >= budget.maxCostUSD:
            return False
        return len(self.trials) < budget.maxTrials

    def reopen(self, now: float) -> bool:
        """Continue an ended experiment whose budget was raised; False if nothing to do."""
        if not self.can_grow():
            return False
        self._record(ExperimentReopened(now))
        return True

    def observe_cost(self, usd: float, trial_usd_per_hour: float, now: float) -> bool:
        """The shell's measure of the cost so far; recorded (True) when decisions may differ.

        Only experiments with `budget.maxCostUSD` record it, and only when it moved by
        COST_STEP of the budget, crossed it, or the hourly price of a trial changed.
        """
        limit = self.spec.budget.maxCostUSD
        if limit is None or self.ended is not None:
            return False
        first = not self.cost_observed
        old_rate = self.trial_usd_per_hour
        moved = usd - self.cost_usd >= COST_STEP * limit
        crossed = self.cost_usd < limit <= usd
        repriced = abs(trial_usd_per_hour - old_rate) > COST_RATE_CHANGE * max(old_rate, 1e-9)
        if not (first or moved or crossed or repriced):
            return False
        self._record(CostObserved(usd, trial_usd_per_hour, now))
        return True

    def sampler_request(self, number: int) -> tuple[ExperimentSpec, list[SamplerTrial], dict, int]:
        """Arguments for `samplers.suggest` for trial `number`: trials sampled before it
        (after spec.warmStart's, numbered below 0)."""
        trials = (
            [*self._prior_view(), *(_sampler_view(t) for t in self.trials if t.number < number)]
            if reads_history(self.spec)
            else []  # nothing to build, nor to send to a sampler process, per suggestion
        )
        return self.spec, trials, dict(self.study_attrs), number

    # ----- spec.warmStart (kubetune.warmstart) --------------------------------------------

    def needs_warm_start(self) -> bool:
        """Whether the shell must read the earlier experiments now: spec.warmStart is set
        and nothing has happened yet. Once anything is recorded the answer is no for ever:
        a restarted shell never reads them again (WarmStarted holds what was read)."""
        return self.spec.warmStart is not None and self.warm is None and not self.history

    def record_warm_start(self, event: WarmStarted) -> None:
        """Record what the shell read of the earlier experiments, before anything else."""
        if self.needs_warm_start():
            self._record(event)

    def _prior_view(self) -> list[SamplerTrial]:
        warm = self.warm
        if warm is None:
            return []
        algorithm = self.spec.algorithm.name
        if algorithm in (AlgorithmName.RANDOM, AlgorithmName.SOBOL):
            return []  # they learn nothing from earlier trials
        if algorithm is AlgorithmName.GRID and warm.warm_mode != WarmStartMode.REUSE:
            return []  # with reuse, grid skips the points evaluated already
        count = len(warm.prior_trials)
        return [
            SamplerTrial(index - count, dict(p.params), SamplerState.COMPLETE, p.value)
            for index, p in enumerate(warm.prior_trials)
        ]

    def _best_prior(self) -> Best | None:
        """With warmStart mode reuse, the best earlier trial (it counts toward the best)."""
        warm = self.warm
        if warm is None or warm.warm_mode != WarmStartMode.REUSE or not warm.prior_trials:
            return None
        count = len(warm.prior_trials)
        index, prior = min(
            enumerate(warm.prior_trials), key=lambda item: (self.sign * item[1].value, item[0])
        )
        return Best(index - count, prior.trial, prior.params, prior.value, 0)

    def record_suggestion(self, number: int, suggestion: Suggestion | None) -> None:
        trial = self.trials[number] if number < len(self.trials) else None
        if trial is None or trial.phase is not TrialPhase.SAMPLING:
            return  # already recorded (a duplicate after a restart)
        if suggestion is None:
            self._record(SearchExhausted(number))
            return
        self._record(
            TrialSampled(number, suggestion.params, suggestion.system_attrs, suggestion.study_attrs)
        )

    # ----- deciding ---------------------------------------------------------------------

    def decide(self, now: float) -> list[Action]:
        """What to do next. Call after every change; idempotent when nothing changed."""
        if self.ended is not None:
            return []
        if self.started_at is None:
            self._record(ExperimentStarted(now))
        ending = self._ending_reason(now)
        if ending is not None:
            return self._wind_down(*ending, now)
        budget = self.spec.budget
        free = budget.parallelTrials - self.phases.count(*SLOT_PHASES)
        committed = self._committed_cost(now)  # budget.maxCostUSD: what work under way costs
        unaffordable = False
        target: int | None
        holders = self.phases.members(*SLOT_PHASES) if free > 0 else []
        for trial, target in self.scheduler.promotions(
            self.trials, max(free, 0), self.ladders, holders
        ):
            if not self._affordable(committed, cost := self._work_cost(target, trial.last_step)):
                unaffordable = True
                break
            committed += cost
            self._record(TrialPromoted(trial.number, target))
            free -= 1
        while free > 0 and not self.exhausted and self._plans_more():
            number = len(self.trials)
            target = self.scheduler.initial_target(number)
            if unaffordable or not self._affordable(committed, cost := self._work_cost(target)):
                unaffordable = True
                break
            committed += cost
            bracket = self.scheduler.bracket(number)
            self._record(TrialPlanned(number, bracket, target))
            free -= 1
        actions: list[Action] = []
        for trial in self.phases.members(TrialPhase.PENDING):
            if not self._waits_for_slot(trial):
                attempt = len(trial.attempts) + 1
                resume = bool(trial.attempts)
                self._record(TrialLaunched(trial.number, attempt, resume, trial.next_target, now))
                parent = None if trial.parent is None else self.trial_name(trial.parent)
                actions.append(
                    LaunchTrial(
                        trial.number,
                        trial.name,
                        attempt,
                        trial.params,
                        resume,
                        trial.next_target,
                        parent,
                        trial.from_step,
                    )
                )
        sampling = self.phases.members(TrialPhase.SAMPLING)
        if sampling:
            actions.append(SampleTrial(sampling[0].number))
        if not self.phases.count(*SLOT_PHASES):
            if unaffordable:
                message = (
                    f"the next trial or promotion would take the cost (${self.cost_usd:.2f} "
                    f"so far) past maxCostUSD (${budget.maxCostUSD:.2f})"
                )
                return [*actions, *self._finish(True, BUDGET_EXHAUSTED, message, now)]
            reason = SEARCH_SPACE_EXHAUSTED if self.exhausted else MAX_TRIALS_REACHED
            if isinstance(self.scheduler, PBT) and not self.exhausted:
                reason = POPULATION_TRAINED
            return [*actions, *self._finish(True, reason, "", now)]
        return actions

    def _plans_more(self) -> bool:
        """Whether a new trial may be planned: under maxTrials and, with pbt, only the
        initial population (later members come from exploits)."""
        if len(self.trials) >= self.spec.budget.maxTrials:
            return False
        if isinstance(self.scheduler, PBT):
            initial = sum(t.parent is None and t.replaces is None for t in self.trials)
            return initial < self.spec.budget.parallelTrials
        return True

    def _waits_for_slot(self, trial: TrialRecord) -> bool:
        """A pbt replacement starts once the member it replaces has stopped: the
        population never runs one member too many."""
        replaced = None if trial.replaces is None else self.trials[trial.replaces]
        return replaced is not None and replaced.phase is TrialPhase.RUNNING

    # ----- the cost budget (budget.maxCostUSD), from CostObserved events ------------------

    def _affordable(self, committed: float, cost: float) -> bool:
        limit = self.spec.budget.maxCostUSD
        return limit is None or committed + cost <= limit

    def _seconds_per_step(self) -> tuple[float | None, float | None]:
        """Seconds per resource step, and per attempt, over the attempts that ended."""
        seconds = steps = attempts = 0.0
        for trial in self.trials:
            for attempt in trial.attempts:
                if attempt.ended_at is None or attempt.started_at is None:
                    continue
                attempts += 1
                seconds += attempt.ended_at - attempt.started_at
                steps += attempt.consumed
        if not attempts:
            return None, None
        return (seconds / steps if steps else None), seconds / attempts

    def _work_cost(
        self, target: int | None, done: int | None = None, elapsed: float = 0.0
    ) -> float:
        """Projected cost of training from step `done` to `target` (an attempt when None)."""
        if self.spec.budget.maxCostUSD is None:
            return 0.0
        per_step, per_attempt = self._seconds_per_step()
        if target is not None and per_step is not None:
            seconds = max(target - (done or 0), 0) * per_step
        elif per_attempt is not None:
            seconds = max(per_attempt - elapsed, 0.0)
        else:
            seconds = 0.0  # nothing measured yet: only the cost so far counts
        return seconds * self.trial_usd_per_hour / 3600.0

    def _committed_cost(self, now: float) -> float:
        """The cost so far plus what the running and waiting trials will cost to finish."""
        if self.spec.budget.maxCostUSD is None:
            return 0.0
        total = self.cost_usd
        for trial in self.phases.members(*SLOT_PHASES):
            if trial.phase is TrialPhase.RUNNING:
                attempt = trial.attempts[-1]
                elapsed = now - (attempt.started_at if attempt.started_at is not None else now)
                total += self._work_cost(attempt.target, trial.last_step, elapsed)
            elif trial.phase in (TrialPhase.PENDING, TrialPhase.SAMPLING):
                total += self._work_cost(trial.next_target, trial.last_step)
        return total

    def _next_work_affordable(self) -> bool:
        """Whether an ended experiment could afford one more trial or promotion."""
        limit = self.spec.budget.maxCostUSD
        if limit is None or self.cost_usd >= limit:
            return limit is None
        promotions = self.scheduler.promotions(
            self.trials, 1, self.ladders, self.phases.members(*SLOT_PHASES)
        )
        if promotions:
            trial, resource = promotions[0]
            return self._affordable(self.cost_usd, self._work_cost(resource, trial.last_step))
        if self.exhausted or len(self.trials) >= self.spec.budget.maxTrials:
            return False
        target = self.scheduler.initial_target(len(self.trials))
        return self._affordable(self.cost_usd, self._work_cost(target))

    def _ending_reason(self, now: float) -> tuple[bool, str, str] | None:
        budget = self.spec.budget
        failed = self.phases.count(TrialPhase.FAILED)
        if budget.maxFailedTrials is not None and failed > budget.maxFailedTrials:
            message = (
                f"{failed} trials failed, more than maxFailedTrials ({budget.maxFailedTrials})"
            )
            return False, TOO_MANY_FAILED_TRIALS, message
        limit = budget.max_duration_seconds()
        if limit is not None and self.started_at is not None and now - self.started_at >= limit:
            return True, MAX_DURATION_REACHED, f"ran for maxDuration ({budget.maxDuration})"
        if budget.maxCostUSD is not None and self.cost_usd >= budget.maxCostUSD:
            message = f"cost ${self.cost_usd:.2f} reached maxCostUSD (${budget.maxCostUSD:.2f})"
            return True, BUDGET_EXHAUSTED, message
        # The same best as the status shows (comparable fidelity first); running trials
        # are stopped, not waited for.
        best = self.best() if self.spec.objective.target is not None else None
        reached = best is not None and self.spec.objective.reached(best.value)
        if reached or self.target_reached:
            objective = self.spec.objective
            message = f"{objective.metric} reached the target {objective.target:g}"
            if best is not None and reached:
                value = f"{objective.metric}={best.value:.6g}"
                message = f"best trial {best.name}: {value} reached the target {objective.target:g}"
            return True, TARGET_REACHED, message
        return None

    def _reaches_target(self, trial: TrialRecord) -> bool:
        return trial.value is not None and self.spec.objective.reached(trial.value)

    def _wind_down(self, succeeded: bool, reason: str, message: str, now: float) -> list[Action]:
        actions: list[Action] = []
        running = self.phases.members(TrialPhase.RUNNING)
        for trial in running:
            if trial.number not in self.stop_reasons:
                self._record(StopRequested(trial.number, reason))
                actions.append(StopTrial(trial.number, trial.attempts[-1].number, reason))
        if running:
            return actions  # finish once they have exited, so no result is lost
        return self._finish(succeeded, reason, message, now)

    def _finish(self, succeeded: bool, reason: str, message: str, now: float) -> list[Action]:
        best = self.best()
        if succeeded and best is None:
            succeeded, reason = False, NO_RESULTS
            message = f"no trial reported a finite {self.spec.objective.metric}"
        if succeeded and not message and best is not None:
            message = f"best trial {best.name}: {self.spec.objective.metric}={best.value:.6g}"
        self._record(ExperimentEnded(succeeded, reason, message, now))
        return [FinishExperiment(succeeded, reason, message)]

    # ----- reading ----------------------------------------------------------------------

    def best(self) -> Best | None:
        """The best trial trained furthest: lower-fidelity values are not comparable.
        With warmStart mode reuse, the best earlier trial when it is better."""
        own = self._best_own()
        prior = self._best_prior()
        if prior is None or (own is not None and self.sign * own.value <= self.sign * prior.value):
            return own
        return prior

    def _best_own(self) -> Best | None:
        scored = [
            t for t in self.trials if t.value is not None and t.phase is not TrialPhase.FAILED
        ]
        if not scored:
            return None
        completed = [t for t in scored if t.phase is TrialPhase.COMPLETED]
        if completed:
            pool = completed
        else:
            furthest = max(t.last_step or 0 for t in scored)
            pool = [t for t in scored if (t.last_step or 0) == furthest]
        trial = min(pool, key=lambda t: (self.sign * (t.value or 0.0), t.number))
        assert trial.value is not None
        return Best(trial.number, trial.name, trial.params, trial.value, trial.resource)

    def slots_ahead(self) -> int | None:
        """The most trials that may hold a slot at once from now on: those holding one,
        those still to be planned, and the paused ones the scheduler may resume (None: it
        cannot say). Nodes beyond what this can ever use need no grace period."""
        if self.ended is not None:
            return 0
        holders = self.phases.members(*SLOT_PHASES)
        resumable = self.scheduler.most_promotions(self.trials, self.ladders, holders)
        if resumable is None:
            return None
        planned = 0 if self.exhausted else max(self.spec.budget.maxTrials - len(self.trials), 0)
        # Trials holding a slot keep it when parallelTrials is lowered under them.
        free = max(self.spec.budget.parallelTrials - len(holders), 0)
        return len(holders) + min(free, resumable + planned)

    def counts(self) -> dict[str, int]:
        return {phase.value: self.phases.count(phase) for phase in TrialPhase}

    def running(self) -> Sequence[TrialRecord]:
        return self.phases.members(TrialPhase.RUNNING)


def _sampler_view(trial: TrialRecord) -> SamplerTrial:
    if trial.phase is TrialPhase.COMPLETED:
        state = SamplerState.COMPLETE
    elif trial.phase is TrialPhase.FAILED:
        state = SamplerState.FAILED
    elif trial.phase in (TrialPhase.STOPPED, TrialPhase.PAUSED) or trial.rung_values:
        # A promoted trial training on to its next rung is known by its rung
        # values: as RUNNING, constant liar would count the best trials as bad.
        state = SamplerState.PRUNED
    else:
        state = SamplerState.RUNNING
    return SamplerTrial(
        number=trial.number,
        params=dict(trial.params),
        state=state,
        value=trial.value,
        intermediate=dict(trial.values),
        system_attrs=dict(trial.sampler_attrs),
    )
