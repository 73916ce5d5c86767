"""The HPOTrial objects and the statuses the operator writes: pure functions of the
engine's state (the controller writes them; nothing here does I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubetune.conditions import experiment_conditions
from kubetune.engine import Engine
from kubetune.names import GROUP, LABEL_EXPERIMENT, LABEL_TRIAL, VERSION, pod_name
from kubetune.operator.pods import owner_reference
from kubetune.shell.core import experiment_phase
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import rfc3339
from kubetune.trials import TrialPhase, TrialRecord


def timestamp(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(seconds)


def trial_object(
    namespace: str, experiment: str, experiment_uid: str, trial: TrialRecord
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HPOTrial",
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": {LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial.name},
            "ownerReferences": [owner_reference("HPOExperiment", experiment, experiment_uid)],
        },
        "spec": {
            "experiment": experiment,
            "number": trial.number,
            "params": dict(trial.params),
            "bracket": trial.bracket,
        },
    }


def trial_status(
    trial: TrialRecord, history: list[dict[str, Any]], node: str | None, checkpoint_uri: str
) -> dict[str, Any]:
    attempt = trial.attempt
    return {
        "phase": trial.phase.value,
        "reason": trial.reason,
        "value": trial.value,
        "step": trial.last_step,
        "resource": trial.resource,
        "attempt": attempt.number if attempt else 0,
        "pod": pod_name(trial.name, attempt.number) if attempt else None,
        "node": node,
        "interruptions": trial.interruptions,
        "checkpointUri": checkpoint_uri or None,
        "startTime": timestamp(trial.started_at),
        "completionTime": timestamp(trial.ended_at),
        "history": history,
    }


def experiment_status(
    engine: Engine,
    spec: ExperimentSpec,
    generation: int,
    cost: tuple[float | None, float | None],
    history: list[dict[str, Any]],
    previous_conditions: Sequence[dict[str, Any]],
    capacity_conditions: Sequence[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """status of the HPOExperiment; `cost`: USD so far and when it was accounted."""
    counts = engine.counts()
    best = engine.best()
    ended = engine.ended
    done = sum(counts[p.value] for p in TrialPhase if p.is_final)
    phase = experiment_phase(engine)
    if ended is None:
        reason, message = "Running", f"{done} of {spec.budget.maxTrials} trials done"
    else:
        reason, message = ended.reason, ended.message
    cost_usd, cost_at = cost
    conditions = experiment_conditions(
        phase, reason, message, generation, list(previous_conditions), timestamp(now)
    )
    return {
        "phase": phase,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "startTime": timestamp(engine.started_at),
        "completionTime": timestamp(ended.at) if ended else None,
        "trialsTotal": len(engine.trials),
        "trialsDone": done,
        "trialsRunning": counts["Running"] + counts["Pending"] + counts["Sampling"],
        "trialsPaused": counts["Paused"],
        "trialsCompleted": counts["Completed"],
        "trialsStopped": counts["Stopped"],
        "trialsFailed": counts["Failed"],
        "bestTrial": best.name if best else None,
        "bestValue": best.value if best else None,
        "bestParams": dict(best.params) if best else None,
        "interruptions": sum(t.interruptions for t in engine.trials),
        "costUSD": cost_usd,
        "costAccountedAt": None if cost_at is None else rfc3339(cost_at, True),
        "history": history,
        "studyAttrs": engine.study_attrs,
        "conditions": conditions + list(capacity_conditions),
    }


def restoring_patch(live: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns the status `live` (written by someone else) into `ours`.

    Statuses are written with JSON merge patches, which keep every key the patch does not
    name: a key someone added (an HPOTrial's `conditions`, `studyAttrs.forged`) would
    survive our write. Each key of `live` that `ours` lacks is set to null, at every
    level where both hold an object (lists are replaced whole by a merge patch)."""
    patch: dict[str, Any] = dict(ours)
    if not isinstance(live, dict):
        return patch
    for key, value in live.items():
        mine = ours.get(key)
        if mine is None:
            patch[key] = None
        elif isinstance(mine, dict) and isinstance(value, dict):
            patch[key] = restoring_patch(value, mine)
    return patch
