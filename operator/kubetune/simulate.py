"""A deterministic, virtual-clock driver that runs an `Engine` to completion without processes.

What it models
--------------
* The engine's actions, carried out exactly as a shell would: `SampleTrial` calls
  `samplers.suggest` synchronously (zero virtual time) and records the suggestion;
  `LaunchTrial` starts a virtual trial; `StopTrial` ends one at once; `FinishExperiment`
  ends the run.
* A virtual trial trains one resource step per `step_duration` virtual seconds (the
  duration may depend on the trial's parameters) and reports
  `{metric: objective(params, step)}` through `Engine.report` after each step. It obeys the
  verdict: on `pause` or `stop` it exits (`attempt_ended(..., EXITED, 0, now)`); it also
  exits by itself after the last step (the scheduler's `maxResource`, or `max_steps` when
  there is none).
* Checkpoints: a new trial starts at step 1; a resumed trial (`resume=True`) starts right
  after the last step its previous attempt reported, so promoted trials never retrain
  the steps below their rung.
* An event queue (a heap ordered by virtual time, then by insertion order) makes the run
  deterministic: the same spec, objective and durations give the same history, bit for bit.
* An optional resource budget: the run is cut when the total number of trained steps
  reaches it (the engine is then left unfinished, with trials still running), which is how
  budget-matched comparisons of schedulers are made.

What it does not model
----------------------
Time to sample (the GP sampler's seconds are free here), pod scheduling and start-up,
checkpoint save/load time, report latency or retries, failures, spot interruptions
(`ExitKind.INTERRUPTED`), noise in step durations, and the partial step a trial was
training when it was stopped (it is not counted as trained resource).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune import samplers
from kubetune.engine import Engine, FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.events import ExitKind
from kubetune.space import Params
from kubetune.spec import ExperimentSpec, Goal, parse_experiment
from kubetune.trials import Decision

Objective = Callable[[Params, int], float]
"""`f(params, step)`: the objective's value after training `step` resource units."""

StepDuration = float | Callable[[Params], float]


class SimulationError(RuntimeError):
    """The engine stalled (nothing running, nothing to do, not finished) or ran away."""


@dataclass(frozen=True)
class TrajectoryPoint:
    """Best-so-far full-fidelity value after `resource` trained steps (at virtual `time`)."""

    resource: int
    best: float
    time: float
    trial: int


@dataclass
class SimulationResult:
    engine: Engine
    resource: int
    """Total resource steps trained by all attempts of all trials."""
    trajectory: list[TrajectoryPoint]
    """One point per full-fidelity evaluation, in the order they happened."""
    makespan: float
    """Virtual time from the first decision to the last event."""
    finished: FinishExperiment | None
    """The engine's last action, or None when the resource budget cut the run."""
    full_fidelity_evaluations: int = 0
    goal: Goal = Goal.MINIMIZE

    @property
    def best_value(self) -> float | None:
        """Best value any trial reported at full fidelity (None if none got there)."""
        return self.trajectory[-1].best if self.trajectory else None

    def resource_to_reach(self, target: float) -> int | None:
        """Resource trained when the best full-fidelity value first reached `target`."""
        for point in self.trajectory:
            better = point.best <= target if self.goal is Goal.MINIMIZE else point.best >= target
            if better:
                return point.resource
        return None

    def best_after(self, evaluations: int) -> float | None:
        """Best-so-far value after the first `evaluations` full-fidelity evaluations."""
        if evaluations <= 0 or not self.trajectory:
            return None
        return self.trajectory[min(evaluations, len(self.trajectory)) - 1].best


@dataclass
class _VirtualTrial:
    number: int
    params: Params
    attempt: int = 0
    alive: bool = False
    checkpoint: int = 0  # last step reported; a resumed attempt continues after it


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    number: int = field(compare=False)
    attempt: int = field(compare=False)
    step: int = field(compare=False)


def simulate(
    spec: ExperimentSpec,
    objective: Objective,
    *,
    step_duration: StepDuration = 1.0,
    max_steps: int | None = None,
    resource_budget: int | None = None,
    experiment: str = "sim",
    suggest: Callable[..., samplers.Suggestion | None] = samplers.suggest,
    max_events: int = 10_000_000,
    together: bool = False,
) -> SimulationResult:
    """Run `spec` on a virtual clock until the engine finishes (or the budget is spent).

    `max_steps` is where a trial ends by itself when the spec's scheduler has no
    `maxResource`; with one, trials end at `maxResource` and `max_steps` must be unset or
    equal. `resource_budget` caps the total trained steps. `suggest` is
    `samplers.suggest` unless a test substitutes it. With `together`, every step that ends
    at the same virtual time is reported before the engine decides, so trials that end
    together are replaced by one batch of suggestions (as the operator's `suggest_many`
    makes them); without it, each is replaced before the next is reported.
    """
    max_resource = spec.scheduler.maxResource
    if max_resource is not None and max_steps is not None and max_steps != max_resource:
        raise ValueError(f"max_steps ({max_steps}) differs from maxResource ({max_resource})")
    last_step = max_resource if max_resource is not None else max_steps
    if last_step is None or last_step < 1:
        raise ValueError("trials need an end: set scheduler.maxResource or max_steps >= 1")
    if resource_budget is not None and resource_budget < 1:
        raise ValueError("resource_budget must be at least 1")

    metric = spec.objective.metric
    goal = spec.objective.goal
    sign = spec.objective.sign()
    engine = Engine(spec, experiment)
    virtual: dict[int, _VirtualTrial] = {}
    queue: list[_Event] = []
    seq = 0
    now = 0.0
    resource = 0
    trajectory: list[TrajectoryPoint] = []
    best: float | None = None
    finished: FinishExperiment | None = None

    def duration(params: Params) -> float:
        value = step_duration(params) if callable(step_duration) else step_duration
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"step duration must be positive and finite, got {value!r}")
        return float(value)

    def schedule(trial: _VirtualTrial, step: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(
            queue, _Event(now + duration(trial.params), seq, trial.number, trial.attempt, step)
        )

    def end_attempt(trial: _VirtualTrial) -> None:
        trial.alive = False
        engine.attempt_ended(trial.number, trial.attempt, ExitKind.EXITED, 0, now)

    def carry_out(action: Any) -> bool:
        """Carry out one action; True when it changed the engine's state (ask again)."""
        nonlocal finished
        match action:
            case SampleTrial(number=number):
                engine.record_suggestion(number, suggest(*engine.sampler_request(number)))
                return True
            case LaunchTrial(number=number, attempt=attempt, params=params, resume=resume):
                trial = virtual.setdefault(number, _VirtualTrial(number, dict(params)))
                if not resume:
                    trial.checkpoint = 0
                trial.attempt, trial.alive = attempt, True
                schedule(trial, trial.checkpoint + 1)
            case StopTrial(number=number, attempt=attempt):
                trial = virtual[number]
                if trial.alive and trial.attempt == attempt:
                    end_attempt(trial)  # its queued step is skipped when it comes up
                    return True
            case FinishExperiment():
                finished = action
        return False

    def decide() -> None:
        # A suggestion or a stop changes what the engine decides next (launch the trial,
        # sample the next one, finish), so ask again until an answer changes nothing.
        while finished is None:
            changed = False
            for action in engine.decide(now):
                changed |= carry_out(action)
            if not changed:
                return

    decide()
    events = 0
    undecided = False  # `together`: steps handled at `now`, the engine not yet asked
    while finished is None:
        if undecided and (not queue or queue[0].time > now):
            undecided = False
            decide()
            continue
        if not queue:
            raise SimulationError(
                f"the engine stalled at t={now}: nothing running and nothing to do "
                f"(trials: {engine.counts()})"
            )
        event = heapq.heappop(queue)
        trial = virtual[event.number]
        if not trial.alive or trial.attempt != event.attempt:
            continue  # stopped while this step was training
        events += 1
        if events > max_events:
            raise SimulationError(f"more than {max_events} steps; is the experiment endless?")
        if resource_budget is not None and resource >= resource_budget:
            break
        now = event.time
        resource += 1
        value = float(objective(trial.params, event.step))
        verdict = engine.report(trial.number, trial.attempt, event.step, {metric: value}, now)
        trial.checkpoint = event.step
        if event.step == last_step and math.isfinite(value):
            if best is None or sign * value < sign * best:
                best = value
            trajectory.append(TrajectoryPoint(resource, best, now, trial.number))
        if verdict.decision is Decision.CONTINUE and event.step < last_step:
            schedule(trial, event.step + 1)
        else:
            end_attempt(trial)
        if together:
            undecided = True
        else:
            decide()

    started = engine.started_at or 0.0
    return SimulationResult(
        engine=engine,
        resource=resource,
        trajectory=trajectory,
        makespan=now - started,
        finished=finished,
        full_fidelity_evaluations=len(trajectory),
        goal=goal,
    )


def make_spec(
    parameters: Sequence[Mapping[str, Any]],
    *,
    metric: str = "loss",
    goal: str = "minimize",
    algorithm: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    budget: Mapping[str, Any],
    name: str = "sim",
) -> ExperimentSpec:
    """An `ExperimentSpec` validated like a real one, with a placeholder trial template."""
    document = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": metric, "goal": goal},
            "parameters": [dict(p) for p in parameters],
            "algorithm": dict(algorithm or {}),
            "scheduler": dict(scheduler or {}),
            "budget": dict(budget),
            "trialTemplate": {
                "spec": {"containers": [{"name": "trial", "command": ["simulated"]}]}
            },
        },
    }
    return parse_experiment(document).spec
