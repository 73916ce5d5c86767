"""The HPOTrial objects and the statuses the operator writes: pure functions of the
engine's state (the controller writes them; nothing here does I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from kubetune.conditions import experiment_conditions
from kubetune.engine import Engine
from kubetune.names import (
    ANNOTATION_FIRST_RECORDS,
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_TRIAL,
    VERSION,
    pod_name,
)
from kubetune.operator.gang import rank_pod_name
from kubetune.operator.pods import owner_reference
from kubetune.schedulers import pbt
from kubetune.shell.core import experiment_phase
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import rfc3339
from kubetune.trials import TrialPhase, TrialRecord
from kubetune.warmstart import summary

# The statuses written, key by key: the one model the CRDs' status schemas (crd.py) must
# list exactly (tests/crd/test_status_model.py holds them to it, both ways); a key added
# here and not there would be pruned by the API server without a word.


class TrialLineage(TypedDict):
    """pbt: where a member came from. Not `generation`, which Kubernetes' metadata and
    observedGeneration mean otherwise."""

    parent: str | None
    fromStep: int | None
    generation: int
    replacedBy: str | None
    schedule: list[dict[str, Any]]  # the latest SCHEDULE_KEPT entries, oldest first


# A member's schedule in its status is bounded (the experiment's bestSchedule is whole):
# a status is one etcd object, and generations grow with the run.
SCHEDULE_KEPT = 50


class TrialStatus(TypedDict):
    phase: str
    reason: str  # free text: "not promoted", "exit code 1"
    value: float | None
    step: int | None
    resource: int
    attempt: int
    pod: str | None
    node: str | None
    interruptions: int
    parent: str | None
    fromStep: int | None
    lineage: TrialLineage | None  # pbt only
    checkpointUri: str | None
    startTime: str | None
    completionTime: str | None
    history: list[dict[str, Any]]
    # The latest attempt that reported through the SDK: a restarted operator does not
    # follow its log for `name=value` lines (one stream a running pod through the API
    # server). Absent until one does, as in statuses written before it existed.
    sdkAttempt: NotRequired[int]


class FailedStatus(TypedDict):
    """What an experiment that cannot run is told (invalid spec, warm start failed,
    history unreadable): the rest of its status is left as it was."""

    phase: str
    reason: str  # CamelCase
    message: str
    observedGeneration: int | None
    conditions: list[dict[str, Any]]


class ExperimentStatus(FailedStatus):
    startTime: str | None
    completionTime: str | None
    trialsTotal: int
    trialsDone: int
    trialsRunning: int
    trialsPaused: int
    trialsCompleted: int
    trialsStopped: int
    trialsFailed: int
    bestTrial: str | None
    bestValue: float | None
    bestParams: dict[str, Any] | None
    bestSchedule: NotRequired[list[dict[str, Any]] | None]  # pbt only
    interruptions: int
    costUSD: float | None
    costAccountedAt: str | None
    history: list[dict[str, Any]]
    studyAttrs: dict[str, Any]
    warmStart: dict[str, object] | None


def timestamp(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(seconds)


def trial_object(
    namespace: str,
    experiment: str,
    experiment_uid: str,
    trial: TrialRecord,
    first_records: str | None = None,
) -> dict[str, Any]:
    """The HPOTrial; `first_records`: its history so far, as JSON
    (names.ANNOTATION_FIRST_RECORDS)."""
    annotations = {} if first_records is None else {ANNOTATION_FIRST_RECORDS: first_records}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HPOTrial",
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": {LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial.name},
            **({"annotations": annotations} if annotations else {}),
            "ownerReferences": [owner_reference("HPOExperiment", experiment, experiment_uid)],
        },
        "spec": {
            "experiment": experiment,
            "number": trial.number,
            "params": dict(trial.params),
            "bracket": trial.bracket,
        },
    }


def _best_schedule(engine: Engine) -> list[dict[str, Any]] | None:
    """pbt: the best trial's whole schedule of parameters (to retrain with)."""
    best = engine.best()
    return None if best is None else pbt.schedule_document(engine.trials, best.number)


def trial_lineage(engine: Engine, number: int) -> TrialLineage | None:
    """pbt: a member's parent, generation and schedule of parameters; None otherwise."""
    if not isinstance(engine.scheduler, pbt.PBT):
        return None
    found = pbt.lineage_document(engine.trials, number)
    return {
        "parent": found["parent"],
        "fromStep": found["fromStep"],
        "generation": found["generation"],
        "replacedBy": found["replacedBy"],
        "schedule": pbt.schedule_document(engine.trials, number)[-SCHEDULE_KEPT:],
    }


def written_trial_status(
    engine: Engine,
    workers: int,
    trial: TrialRecord,
    history: list[dict[str, Any]],
    node: str | None,
    checkpoint_uri: str,
    sdk_attempt: int | None,
) -> dict[str, Any]:
    """The HPOTrial status the operator writes: a plain dict (what is written, compared
    and patched as JSON), a gang's rank 0 standing for its trial as its pod."""
    lineage = trial_lineage(engine, trial.number)
    found = dict(trial_status(trial, history, node, checkpoint_uri, lineage, sdk_attempt))
    if workers > 1 and trial.attempt is not None:
        found["pod"] = rank_pod_name(trial.name, trial.attempt.number, 0, workers)
    return found


def trial_status(
    trial: TrialRecord,
    history: list[dict[str, Any]],
    node: str | None,
    checkpoint_uri: str,
    lineage: TrialLineage | None,
    sdk_attempt: int | None = None,
) -> TrialStatus:
    attempt = trial.attempt
    status: TrialStatus = {
        "phase": trial.phase.value,
        "reason": trial.reason,
        "value": trial.value,
        "step": trial.last_step,
        "resource": trial.resource,
        "attempt": attempt.number if attempt else 0,
        "pod": pod_name(trial.name, attempt.number) if attempt else None,
        "node": node,
        "interruptions": trial.interruptions,
        # pbt: the member whose checkpoint (at fromStep) this trial started from
        "parent": pbt.launch_lineage(trial)[0],
        "fromStep": trial.from_step,
        "lineage": lineage,
        "checkpointUri": checkpoint_uri or None,
        "startTime": timestamp(trial.started_at),
        "completionTime": timestamp(trial.ended_at),
        "history": history,
    }
    if sdk_attempt is not None:
        status["sdkAttempt"] = sdk_attempt
    return status


def experiment_status(
    engine: Engine,
    spec: ExperimentSpec,
    generation: int,
    cost: tuple[float | None, float | None],
    history: list[dict[str, Any]],
    previous_conditions: Sequence[dict[str, Any]],
    capacity_conditions: Sequence[dict[str, Any]],
    now: float,
) -> ExperimentStatus:
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
    status: ExperimentStatus = {
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
        "warmStart": summary(engine.warm),
        "conditions": conditions + list(capacity_conditions),
    }
    if isinstance(engine.scheduler, pbt.PBT):
        status["bestSchedule"] = _best_schedule(engine)
    return status


def failed_status(
    reason: str,
    message: str,
    generation: int | None,
    previous_conditions: Sequence[dict[str, Any]],
    now: float,
) -> FailedStatus:
    """The status of an experiment that cannot run (Failed; Stalled for GitOps tools)."""
    conditions = experiment_conditions(
        "Failed", reason, message, generation, list(previous_conditions), timestamp(now)
    )
    return {
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "conditions": conditions,
    }


def restoring_patch(live: Any, ours: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns the status `live` (written by someone else) into `ours`.

    Statuses are written with JSON merge patches, which keep every key the patch does not
    name: a key someone added (`studyAttrs.forged`, one an older operator wrote) would
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
