"""Which objects are the experiment's own, and what is done about those that are not:
an HPOTrial someone else made is ignored, a name someone else holds fails its trial,
a pod that lost its owner is deleted, a status someone else wrote is put back (the
writes themselves are kubetune.operator.writes')."""

from __future__ import annotations

from typing import Any

from kubetune.names import LABEL_TRIAL
from kubetune.operator.experiment import Experiment


def is_ours(experiment: Experiment, trial: dict[str, Any]) -> bool:
    """An HPOTrial this experiment's controller made: its name is the one its number
    gives, and the experiment controls it."""
    number = (trial.get("spec") or {}).get("number")
    metadata = trial.get("metadata") or {}
    controlled = any(
        ref.get("uid") == experiment.uid and ref.get("controller")
        for ref in metadata.get("ownerReferences") or []
    )
    return (
        isinstance(number, int)
        and not isinstance(number, bool)
        and number >= 0
        and metadata.get("name") == experiment.engine.trial_name(number)
        and controlled
    )


async def name_taken(experiment: Experiment, kind: str, name: str) -> str:
    """An object the operator would make exists and is not its own: left as it is,
    and its trial fails, saying which object holds the name."""
    message = f"{kind} {name} exists and is not the operator's: the name is taken"
    await experiment.event(message, "TrialObjectNameTaken", True)
    return message


async def status_restored(experiment: Experiment, what: str) -> None:
    experiment.observer.object_restored(what.partition(" ")[0], "status")
    message = f"The status of {what} was written by someone other than the operator: put back"
    await experiment.event(message, "StatusRestored", True)


async def delete_orphaned_pods(
    experiment: Experiment, trial_name: str | None = None, live_uid: str | None = None
) -> list[str]:
    """Pods of this experiment's trials that no object owns: their HPOTrial was
    deleted with `--cascade=orphan`, and the one put back (a new UID) does not own
    them, so nothing would delete them, not even the experiment's deletion. The
    operator may not patch pods (rbac.yaml), so it cannot adopt them: they are
    deleted, and the attempt each ran ends as an interruption (resumed). With
    `live_uid` (the HPOTrial just put back), pods owned only by its deleted
    predecessor go too: the garbage collector would delete them, but only once it
    has caught up (tens of seconds while it learns a new CRD), and meanwhile the
    attempt would run on as if nothing had happened. Returns their names."""
    exp = experiment
    names = {t.name for t in exp.engine.trials} if trial_name is None else {trial_name}
    deleted = []

    def orphaned(pod: dict[str, Any]) -> bool:
        metadata = pod["metadata"]
        owners = {o.get("uid") for o in metadata.get("ownerReferences") or []}
        stale = live_uid is not None and not owners & {live_uid, exp.uid}
        if (owners and not stale) or metadata.get("deletionTimestamp"):
            return False
        return (metadata.get("labels") or {}).get(LABEL_TRIAL) in names

    for pod in await exp.kube.list_pods(exp.namespace, exp.name, orphaned):
        metadata = pod["metadata"]
        await exp.kube.delete_pod(exp.namespace, metadata["name"], exp.config.pod_grace_seconds)
        deleted.append(metadata["name"])
        why = (
            "belonged to its deleted HPOTrial"
            if metadata.get("ownerReferences")
            else "had no owner (its HPOTrial was deleted with --cascade=orphan)"
        )
        await exp.event(
            f"Pod {metadata['name']} {why}: deleted, its trial resumes",
            "OrphanedPodDeleted",
            True,
        )
    return deleted
