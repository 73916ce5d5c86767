"""Objects changed by others, level-triggered: an HPOTrial deleted is put back, a
status written by anyone but the operator is written again (Event `StatusRestored`).
Our own writes coming back on the watch (kubetune.operator.authorship tells them)
and objects that are not ours are left alone."""

from __future__ import annotations

from typing import Any

from kubetune.operator import ownership
from kubetune.operator.experiment import Experiment
from kubetune.operator.writes import StatusWriter


async def trial_changed(
    experiment: Experiment, writer: StatusWriter, body: dict[str, Any], deleted: bool
) -> None:
    """An HPOTrial of this experiment changed (or was deleted)."""
    if not experiment.loaded or experiment.closed:
        return
    metadata = body.get("metadata") or {}
    number = (body.get("spec") or {}).get("number")
    if not ownership.is_ours(experiment, body) or not isinstance(number, int):
        return
    if number >= len(experiment.engine.trials):
        return
    if metadata.get("uid") != writer.trial_uids.get(number):
        return  # an older object, or one put back already
    if deleted:
        # Written now: the write finds it gone and puts it back (`StatusWriter`); what
        # we wrote last is gone with it, so the write is not skipped as unchanged.
        writer.ours.written_status.pop(number, None)
        writer.dirty_trials.add(number)
        await writer.flush_trial(number)
        return
    if writer.ours.trial_write_is_ours(number, body):
        return
    if not body.get("status") and number in writer.late_nodes:
        # Created with its history, its status not shown yet (it is due): someone
        # labelled or annotated it meanwhile, which is theirs to do.
        return
    await ownership.status_restored(experiment, f"HPOTrial {metadata.get('name')}")
    writer.ours.foreign_trial_status[number] = body.get("status")
    writer.dirty_trials.add(number)
    await writer.flush_trial(number)


async def experiment_status_seen(
    experiment: Experiment, writer: StatusWriter, body: dict[str, Any]
) -> None:
    """The experiment changed and its spec did not: a status written by anyone else
    is written again."""
    if not experiment.loaded or experiment.closed:
        return
    if writer.ours.experiment_write_is_ours(body, writer.last_status):
        return
    async with experiment.lock:
        await ownership.status_restored(experiment, f"HPOExperiment {experiment.name}")
        writer.ours.foreign_experiment_status = body.get("status")
        await writer.write_experiment_status(force=True)
