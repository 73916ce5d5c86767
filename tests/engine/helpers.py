"""A tiny synchronous shell around the engine, and spec builders, for the engine tests.

`Driver` plays what the local runner and the operator do: it carries out the engine's
actions at once (sampling with fixed parameters unless told otherwise), feeds reports and
exits back, and checks after every `decide` that the engine keeps its promises that hold at
all times (never more trials holding a slot than `parallelTrials`, at most one running
attempt per trial).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubetune.engine import (
    Action,
    Engine,
    FinishExperiment,
    LaunchTrial,
    SampleTrial,
    StopTrial,
)
from kubetune.events import ExitKind, from_record, to_record
from kubetune.samplers import Suggestion, suggest
from kubetune.schedulers.ladders import RungLadders
from kubetune.spec import ExperimentSpec, parse_experiment
from kubetune.trials import TrialPhase, Verdict

X_PARAM = {"name": "x", "type": "float", "min": 0.0, "max": 1.0}


def make_spec(
    *,
    scheduler: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    algorithm: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    goal: str = "minimize",
) -> ExperimentSpec:
    """An experiment spec through the same validation users get (`parse_experiment`)."""
    document = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": "exp"},
        "spec": {
            "objective": {"metric": "loss", "goal": goal},
            "parameters": parameters or [X_PARAM],
            "algorithm": algorithm or {"name": "random", "seed": 7},
            "scheduler": scheduler or {"name": "none"},
            "budget": budget or {"maxTrials": 4},
            "trialTemplate": {
                "spec": {"containers": [{"name": "trial", "command": ["python", "train.py"]}]}
            },
        },
    }
    return parse_experiment(document).spec


def fixed_params(engine: Engine, number: int) -> Suggestion:
    """Trial n gets x = n/1000: no sampler, so scheduler tests stay microseconds."""
    return Suggestion({"x": number / 1000}, {}, {})


def real_sampler(engine: Engine, number: int) -> Suggestion | None:
    return suggest(*engine.sampler_request(number))


def without_nulls(value: Any) -> Any:
    """A record as the API server keeps it in a status list: null fields dropped (merge
    patches prune them inside arrays)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def json_round_trip(history: list) -> list:
    """The history through JSON, and through the API server's pruning of nulls."""
    return [
        from_record(without_nulls(json.loads(json.dumps(to_record(event))))) for event in history
    ]


class Driver:
    def __init__(
        self,
        spec: ExperimentSpec,
        name: str = "exp",
        sample: Callable[[Engine, int], Suggestion | None] = fixed_params,
        engine: Engine | None = None,
        now: float = 1000.0,
    ) -> None:
        self.spec = spec
        self.engine = engine if engine is not None else Engine(spec, name)
        self.sample = sample
        self.now = now
        self.actions: list[Action] = []
        self.verdicts: list[tuple[int, int, int, Verdict]] = []
        self.finished: FinishExperiment | None = None

    # ----- the engine's side ----------------------------------------------------------

    def decide(self) -> list[Action]:
        """decide(), sampling synchronously until no trial waits for parameters."""
        out: list[Action] = []
        while True:
            actions = self.engine.decide(self.now)
            self.check_invariants()
            out.extend(actions)
            for action in actions:
                if isinstance(action, FinishExperiment):
                    self.finished = action
            sampling = [a for a in actions if isinstance(a, SampleTrial)]
            if not sampling:
                break
            for action in sampling:
                self.engine.record_suggestion(
                    action.number, self.sample(self.engine, action.number)
                )
        self.actions.extend(out)
        return out

    def check_invariants(self) -> None:
        trials = self.engine.trials
        holding = sum(t.phase.holds_slot for t in trials)
        assert holding <= self.spec.budget.parallelTrials, (holding, self.engine.counts())
        running = [t for t in trials if t.phase is TrialPhase.RUNNING]
        assert len(running) <= self.spec.budget.parallelTrials
        for trial in trials:
            # Only the last attempt may be open.
            assert all(a.ended_at is not None for a in trial.attempts[:-1]), trial
        check_indexes(self.engine)

    # ----- the trials' side -----------------------------------------------------------

    def attempt(self, number: int) -> int:
        attempt = self.engine.trials[number].attempt
        assert attempt is not None
        return attempt.number

    def report(self, number: int, step: int, loss: float, **extra: float) -> Verdict:
        attempt = self.attempt(number)
        verdict = self.engine.report(number, attempt, step, {"loss": loss, **extra}, self.now)
        self.verdicts.append((number, attempt, step, verdict))
        return verdict

    def exit(self, number: int, code: int | None = 0, kind: ExitKind = ExitKind.EXITED) -> bool:
        return self.engine.attempt_ended(number, self.attempt(number), kind, code, self.now)


def check_indexes(engine: Engine) -> None:
    """The engine's kept indexes (trials by phase, rung ladders) are what a scan of every
    trial gives: decisions read them instead of the trials."""
    trials = engine.trials
    for phase in TrialPhase:
        assert engine.phases.members(phase) == [t for t in trials if t.phase is phase], phase
    assert engine.ladders.entries() == RungLadders.of(trials, engine.sign).entries()


def launches(actions: list[Action]) -> list[tuple[int, int, bool, int | None]]:
    """(trial, attempt, resume, target) of each LaunchTrial, in order."""
    return [
        (a.number, a.attempt, a.resume, a.target) for a in actions if isinstance(a, LaunchTrial)
    ]


def stops(actions: list[Action]) -> list[tuple[int, int, str]]:
    return [(a.number, a.attempt, a.reason) for a in actions if isinstance(a, StopTrial)]
