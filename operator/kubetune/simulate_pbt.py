"""A virtual-clock driver for population-based training: the real engine, stateful trials.

`kubetune.simulate` models a trial as `f(params, step)`, which cannot express PBT: a
member's state (its weights) is trained with the parameters of the moment and carried
across an exploit. Here a trial holds a state that `Model.step` advances one resource
step at a time with the trial's parameters, saves it at every interval step before it
reports (the SDK's `checkpoint_due` contract), and starts as a shell would start it:

* a new trial from `Model.init`;
* a trial made by an exploit from its parent's checkpoint at the pinned step, which must
  exist (a missing one raises: that is the bug this guards against);
* a resumed trial (interrupted) from its own latest checkpoint, with its own parameters
  and step, or from its pinned parent checkpoint when it saved none yet.

`interrupt(number, step)` loses a trial's node right after it trained `step` (before
it checkpoints or reports): the attempt ends as interrupted, and the engine resumes it.
Events at the same virtual time run in the order they were scheduled, so a run is
deterministic: the same spec, model and durations give the same history.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune import samplers
from kubetune.engine import Engine, FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.events import ExitKind
from kubetune.spec import ExperimentSpec, parse_experiment
from kubetune.trials import Decision


class Model(Protocol):
    def init(self, params: dict[str, Any], number: int) -> Any: ...

    def step(self, state: Any, params: dict[str, Any], step: int) -> Any: ...

    def value(self, state: Any) -> float:
        """The objective the trial reports for this state."""
        ...


@dataclass
class _Member:
    number: int
    name: str
    params: dict[str, Any]
    attempt: int = 0
    alive: bool = False
    state: Any = None
    step: int = 0
    own: dict[int, Any] = field(default_factory=dict)  # its checkpoints, by step


@dataclass
class PopulationResult:
    engine: Engine
    resource: int
    """Resource steps trained by every attempt of every trial."""
    launches: int
    """Attempts started (pods or processes): one per member plus one per replacement."""
    loads: list[tuple[int, int, int]]
    """(trial, checkpoint's trial, checkpoint's step) for every attempt that started from
    a checkpoint."""
    finished: FinishExperiment | None
    states: dict[int, Any]
    """Each trial's last state."""


def simulate_population(
    spec: ExperimentSpec,
    model: Model,
    *,
    step_duration: Callable[[int, int], float] | float = 1.0,
    interrupt: Callable[[int, int], bool] | None = None,
    experiment: str = "sim",
    max_events: int = 1_000_000,
) -> PopulationResult:
    interval = spec.scheduler.interval
    last_step = spec.scheduler.maxResource
    assert interval is not None and last_step is not None, "a pbt spec"
    engine = Engine(spec, experiment)
    members: dict[int, _Member] = {}
    checkpoints: dict[tuple[int, int], Any] = {}
    queue: list[tuple[float, int, int, int]] = []  # (time, seq, number, attempt)
    seq = 0
    now = 0.0
    resource = launches = 0
    loads: list[tuple[int, int, int]] = []
    finished: FinishExperiment | None = None

    def duration(number: int, step: int) -> float:
        value = step_duration(number, step) if callable(step_duration) else step_duration
        assert math.isfinite(value) and value > 0
        return float(value)

    def schedule(member: _Member) -> None:
        nonlocal seq
        seq += 1
        at = now + duration(member.number, member.step + 1)
        heapq.heappush(queue, (at, seq, member.number, member.attempt))

    def launch(action: LaunchTrial) -> None:
        nonlocal launches
        launches += 1
        member = members.setdefault(
            action.number, _Member(action.number, action.name, dict(action.params))
        )
        member.attempt, member.alive = action.attempt, True
        if action.resume and member.own:
            member.step = max(member.own)
            member.state = member.own[member.step]
            loads.append((action.number, action.number, member.step))
        elif action.parent is not None and action.from_step is not None:
            parent = engine.trial_by_name(action.parent).number
            pinned = (parent, action.from_step)
            if pinned not in checkpoints:
                raise RuntimeError(f"{action.name}: pinned checkpoint {pinned} is missing")
            member.state, member.step = checkpoints[pinned], action.from_step
            loads.append((action.number, *pinned))
        else:
            member.state, member.step = model.init(member.params, action.number), 0
        schedule(member)

    def end(member: _Member, kind: ExitKind) -> None:
        member.alive = False
        engine.attempt_ended(member.number, member.attempt, kind, 0, now)

    def decide() -> None:
        nonlocal finished
        while finished is None:
            changed = False
            for action in engine.decide(now):
                match action:
                    case SampleTrial(number=number):
                        engine.record_suggestion(
                            number, samplers.suggest(*engine.sampler_request(number))
                        )
                        changed = True
                    case LaunchTrial():
                        launch(action)
                    case StopTrial(number=number, attempt=attempt):
                        member = members[number]
                        if member.alive and member.attempt == attempt:
                            end(member, ExitKind.EXITED)
                            changed = True
                    case FinishExperiment():
                        finished = action
            if not changed:
                return

    decide()
    events = 0
    metric = spec.objective.metric
    while finished is None and queue:
        at, _, number, attempt = heapq.heappop(queue)
        member = members[number]
        if not member.alive or member.attempt != attempt:
            continue
        events += 1
        if events > max_events:
            raise RuntimeError(f"more than {max_events} steps")
        now = at
        step = member.step + 1
        member.state = model.step(member.state, member.params, step)
        member.step = step
        resource += 1
        if interrupt is not None and interrupt(number, step):
            # The node is gone before the checkpoint and report of this step.
            member.state, member.step = None, 0
            end(member, ExitKind.INTERRUPTED)
            decide()
            continue
        if step % interval == 0:
            member.own[step] = member.state
            checkpoints[(number, step)] = member.state
        value = float(model.value(member.state))
        verdict = engine.report(number, attempt, step, {metric: value}, now)
        if verdict.decision is Decision.CONTINUE and step < last_step:
            schedule(member)
        else:
            end(member, ExitKind.EXITED)
        decide()
    if finished is None:
        raise RuntimeError(f"the engine stalled at t={now}: {engine.counts()}")
    return PopulationResult(
        engine=engine,
        resource=resource,
        launches=launches,
        loads=loads,
        finished=finished,
        states={n: m.state for n, m in members.items()},
    )


def make_pbt_spec(
    parameters: list[dict[str, Any]],
    *,
    population: int,
    interval: int,
    max_resource: int,
    seed: int = 0,
    algorithm: str = "random",
    metric: str = "loss",
    goal: str = "minimize",
    max_trials: int = 10_000,
    **scheduler: Any,
) -> ExperimentSpec:
    """A pbt `ExperimentSpec`, validated like a real one (a placeholder trial and
    checkpoint location: nothing runs)."""
    document = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": "sim"},
        "spec": {
            "objective": {"metric": metric, "goal": goal},
            "parameters": parameters,
            "algorithm": {"name": algorithm, "seed": seed},
            "scheduler": {
                "name": "pbt",
                "resource": "step",
                "interval": interval,
                "maxResource": max_resource,
                **scheduler,
            },
            "budget": {"maxTrials": max_trials, "parallelTrials": population},
            "trialTemplate": {"spec": {"containers": [{"name": "t", "command": ["simulated"]}]}},
            "checkpoints": {"uri": "file:///simulated"},
        },
    }
    return parse_experiment(document).spec
