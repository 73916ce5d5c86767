"""spec.warmStart on a cluster: the earlier experiments are HPOExperiments in the experiment's
own namespace (a name cannot say another: there is no field for it), read once, when the
experiment's history is empty, through the permissions the operator has already (get
HPOExperiments, list HPOTrials). The mapping is kubetune.warmstart's; the controller
records the result as the experiment's first history record and never reads the earlier
experiments again (they may be deleted the next minute).

An earlier experiment's trials are what its own history says, checked as the operator
checks any history: only records with a valid MAC for that experiment (its namespace,
name and UID) are replayed, and only from HPOTrials it controls. A status someone else
wrote cannot slip trials in.

A missing earlier experiment, one being deleted, one that is not valid, or one with
another objective fails the experiment (reason WarmStartFailed) with a message naming the
field: spec.warmStart cannot change once created, so waiting would not help; create it
again once the earlier experiment is there. That failure is final: a restarted operator
finds it in the stored status and never reads the earlier experiments for it again.
Trials an earlier experiment completes after this one started are not read.
"""

from __future__ import annotations

import time
from typing import Any

from kubetune.engine import Engine
from kubetune.events import WarmStarted
from kubetune.kubeevents import event_body
from kubetune.operator import store
from kubetune.operator.kube import Kube
from kubetune.operator.status import failed_status
from kubetune.schedulers import make_scheduler
from kubetune.spec import ExperimentSpec, SpecError, parse_experiment
from kubetune.tokens import experiment_scope
from kubetune.warmstart import (
    ParentExperiment,
    WarmStartError,
    completed_trials,
    describe,
    warm_start,
)

WARM_START_FAILED = "WarmStartFailed"


async def read_parent(
    kube: Kube, token_key: bytes, namespace: str, index: int, name: str
) -> ParentExperiment:
    where = f"spec.warmStart.experiments[{index}]"
    body = await kube.get_experiment(namespace, name)
    if body is None:
        raise WarmStartError(where, f"no HPOExperiment {name!r} in namespace {namespace!r}")
    if body["metadata"].get("deletionTimestamp"):
        # Its HPOTrials (its trials' reports) are being deleted as it is read: what was
        # read would be a part, chosen by timing.
        raise WarmStartError(where, f"HPOExperiment {name!r} is being deleted")
    try:
        spec = parse_experiment(
            {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
        ).spec
    except SpecError as error:
        first = "; ".join(f"{p}: {r}" for p, r in error.problems[:1])
        raise WarmStartError(where, f"HPOExperiment {name!r} is not valid ({first})") from None
    uid = body["metadata"]["uid"]
    signer = store.HistorySigner(token_key, experiment_scope(namespace, name, uid))
    trials = [t for t in await kube.list_trials(namespace, name) if _controlled(t, name, uid)]
    stored = [(body.get("status") or {}).get("history") or []]
    stored += [(t.get("status") or {}).get("history") or [] for t in trials]
    try:
        checked = store.check_histories(stored, signer)
        merged = store.merge_histories(checked.histories)
        events, _ = store.repair(merged, make_scheduler(spec, None))
        engine = Engine.replay(spec, name, (event for _, event in events))
    except Exception as error:  # its history cannot be replayed: say so, never guess
        reason = f"the history of HPOExperiment {name!r} cannot be replayed ({error})"
        raise WarmStartError(where, reason[:300]) from None
    return ParentExperiment(name, spec.objective, completed_trials(name, engine.trials))


def _controlled(trial: dict[str, Any], experiment: str, uid: str) -> bool:
    """An HPOTrial of experiment `experiment` (UID `uid`): controlled by it, and named
    as its number makes it."""
    metadata = trial.get("metadata") or {}
    number = (trial.get("spec") or {}).get("number")
    return (
        isinstance(number, int)
        and not isinstance(number, bool)
        and metadata.get("name") == f"{experiment}-{number}"
        and any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in metadata.get("ownerReferences") or []
        )
    )


async def read_warm_start(
    kube: Kube, token_key: bytes, namespace: str, spec: ExperimentSpec
) -> WarmStarted:
    """Every earlier experiment of spec.warmStart, read and mapped; WarmStartError if not."""
    assert spec.warmStart is not None
    parents = [
        await read_parent(kube, token_key, namespace, index, name)
        for index, name in enumerate(spec.warmStart.experiments)
    ]
    return warm_start(spec, parents, time.time())


async def start(
    kube: Kube, token_key: bytes, body: dict[str, Any], generation: int, engine: Engine
) -> str | None:
    """The controller's hook, while `engine.needs_warm_start()`: the earlier experiments
    read into the engine's first record (Event WarmStarted), or the experiment Failed and
    the message returned."""
    stored = body.get("status") or {}
    if (stored.get("phase"), stored.get("reason")) == ("Failed", WARM_START_FAILED):
        # Failed is terminal: a restarted operator decides from what is stored, not from
        # whether the earlier experiment exists by now (the experiment showed Failed).
        return str(stored.get("message") or WARM_START_FAILED)
    namespace = body["metadata"]["namespace"]
    try:
        event = await read_warm_start(kube, token_key, namespace, engine.spec)
    except WarmStartError as error:
        await fail(kube, body, generation, error)
        return str(error)
    engine.record_warm_start(event)
    await kube.post_event(event_body(body, "HPOExperiment", "WarmStarted", describe(event)))
    return None


async def fail(kube: Kube, body: dict[str, Any], generation: int, error: WarmStartError) -> None:
    """The experiment cannot start: Failed (Stalled for GitOps tools), saying why."""
    metadata = body["metadata"]
    message = str(error)
    previous = (body.get("status") or {}).get("conditions") or []
    status = dict(failed_status(WARM_START_FAILED, message, generation, previous, time.time()))
    await kube.patch_experiment_status(metadata["namespace"], metadata["name"], status)
    await kube.post_event(event_body(body, "HPOExperiment", WARM_START_FAILED, message, True))
