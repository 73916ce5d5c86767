"""Creating an experiment's HPOTrials: put back when someone deleted one, never taking
one someone else made under a trial's name, and a new one created with its history so
far (names.ANNOTATION_FIRST_RECORDS), so that its launch needs no status write of its
own (operator/writes.py; read back by operator/loading.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kubernetes.client.rest import ApiException

from kubetune.names import ANNOTATION_FIRST_RECORDS, MAX_FIRST_RECORDS_BYTES
from kubetune.operator import ownership
from kubetune.operator.history import Record
from kubetune.operator.outcomes import namespace_terminating
from kubetune.operator.pods import owned_by
from kubetune.operator.status import trial_object
from kubetune.trials import TrialRecord

if TYPE_CHECKING:
    from kubetune.operator.writes import StatusWriter


def first_records_json(records: list[Record]) -> str | None:
    """A new trial's history as its HPOTrial's annotation (names.ANNOTATION_FIRST_RECORDS);
    None when it is too big for one (it then goes in the first status write)."""
    try:
        text = json.dumps(records, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return None
    return text if len(text) <= MAX_FIRST_RECORDS_BYTES else None


def carries_first_records(created: dict[str, Any], first: str) -> bool:
    """Whether the HPOTrial holds `first` as its only history: the one just created (or
    the same, created by an operator killed before it wrote a status)."""
    annotations = (created.get("metadata") or {}).get("annotations") or {}
    status = created.get("status") or {}
    return annotations.get(ANNOTATION_FIRST_RECORDS) == first and not status.get("history")


async def create_trial(
    writer: StatusWriter,
    trial: TrialRecord,
    restored: bool = False,
    first_records: str | None = None,
) -> dict[str, Any] | None:
    """Create the trial's HPOTrial (with `first_records`, its history so far); the
    object, ours, or None: someone else's holds the name, or (and the experiment
    closes) the experiment itself is gone, so that nothing is created for it any more."""
    exp = writer.experiment
    if restored:
        current = await exp.kube.get_experiment(exp.namespace, exp.name)
        metadata = (current or {}).get("metadata") or {}
        if metadata.get("uid") != exp.uid or metadata.get("deletionTimestamp"):
            exp.closed = True
            return None
    body = trial_object(exp.namespace, exp.name, exp.uid, trial, first_records)
    try:
        created = await exp.kube.create_trial(exp.namespace, body)
    except ApiException as error:
        if not namespace_terminating(error.status, error.body):
            raise
        exp.close_with_namespace()
        return None
    if not owned_by(created, {exp.uid}):
        writer.name_taken[trial.number] = await ownership.name_taken(exp, "HPOTrial", trial.name)
        return None
    writer.trial_uids[trial.number] = created["metadata"]["uid"]
    # Its ADDED event, status still empty, is ours too.
    writer.ours.note_trial_version(trial.number, created["metadata"]["resourceVersion"])
    if restored:
        await ownership.delete_orphaned_pods(exp, trial.name, created["metadata"]["uid"])
        exp.observer.object_restored("HPOTrial", "deleted")
        await exp.event(
            f"HPOTrial {trial.name} was deleted by someone other than the operator: put "
            f"back from the operator's state",
            "TrialRestored",
            True,
        )
    return created
