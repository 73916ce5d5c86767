"""A distributed trial on Kubernetes (spec.workers > 1): the pods of one attempt, one
gang, and what their ends mean for the attempt (pure; the I/O is in gangshell.py).

The decision (kubetune.gang says the rules both shells share): plain Pods and one
headless Service per trial, not a batch/v1 Indexed Job. A Job's controller replaces a
failed or deleted pod of an index on its own (backoffLimit, backoffLimitPerIndex, and a
deleted pod is recreated while the Job is active): a second member of a gang the
operator never decided, joining peers that kubetune is ending or that hang in a
collective. kubetune's rule is the opposite: any rank lost ends the whole attempt, and
a new gang resumes from the last step every rank checkpointed. Plain pods also keep
everything the operator already does per pod (placement, quota waits, refusals,
ownership checks, log reports, cost by pod) and need no Job controller nor Job RBAC.

Names: rank r of attempt a of trial t is the pod `t-a<a>-r<r>` with `hostname` = its
name and `subdomain` = `t`, the headless Service of the trial (selector: the trial's
label; `publishNotReadyAddresses`, so that rank 0's name resolves before any rank is
ready). MASTER_ADDR = `t-a<a>-r0.t.<namespace>.svc`. One Service per trial, not per
attempt: a resumed gang's names differ by attempt, so nothing is deleted between
attempts, and the garbage collector removes the Service with its experiment. A trial of
one worker keeps its single pod `t-a<a>` exactly as before, and no Service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.events import ExitKind
from kubetune.gang import DEFAULT_MASTER_PORT, rank_env
from kubetune.names import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL, pod_name
from kubetune.operator.outcomes import Outcome
from kubetune.operator.pods import owner_reference
from kubetune.operator.settings import env_seconds

# Which rank a pod of a gang runs (absent on a single-pod trial's pod: rank 0).
LABEL_RANK = "kubetune.dev/rank"
# Kueue's pod integration: a trialTemplate labelled with a LocalQueue (the option) gets
# each gang as one pod group, admitted (or not) whole by Kueue.
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"


def rank_pod_name(trial: str, attempt: int, rank: int, workers: int) -> str:
    return pod_name(trial, attempt) if workers == 1 else f"{pod_name(trial, attempt)}-r{rank}"


def attempt_pod_names(trial: str, attempt: int, workers: int) -> list[str]:
    return [rank_pod_name(trial, attempt, r, workers) for r in range(workers)]


def master_addr(trial: str, attempt: int, namespace: str) -> str:
    """Rank 0's DNS name, through the trial's headless Service."""
    return f"{rank_pod_name(trial, attempt, 0, 2)}.{trial}.{namespace}.svc"


def pod_rank(pod: Mapping[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    text = str(labels.get(LABEL_RANK, "0"))
    return int(text) if text.isdigit() else 0


def rank_pods(pod: dict[str, Any], workers: int, master_port: int = DEFAULT_MASTER_PORT) -> list:
    """The gang of an attempt from its single pod (`pods.trial_pod`): one copy per rank,
    named, labelled and given its torch.distributed environment; with Kueue's queue label
    in the template, the attempt's pod group (name and total count). workers == 1: the
    pod itself, unchanged."""
    if workers == 1:
        return [pod]
    metadata = pod["metadata"]
    namespace = metadata["namespace"]
    trial = metadata["labels"][LABEL_TRIAL]
    attempt = int(metadata["labels"][LABEL_ATTEMPT])
    address = master_addr(trial, attempt, namespace)
    gang = []
    for rank in range(workers):
        name = rank_pod_name(trial, attempt, rank, workers)
        spec = {**pod["spec"], "hostname": name, "subdomain": trial}
        containers = [dict(c) for c in spec["containers"]]
        ours = rank_env(rank, workers, address, master_port, ranks_per_host=1)
        env = [e for e in containers[0].get("env", []) if e["name"] not in ours]
        containers[0]["env"] = env + [{"name": k, "value": v} for k, v in ours.items()]
        spec["containers"] = containers
        labels = {**metadata["labels"], LABEL_RANK: str(rank)}
        annotations = dict(metadata.get("annotations") or {})
        if KUEUE_QUEUE in labels:
            labels[KUEUE_GROUP] = pod_name(trial, attempt)
            annotations[KUEUE_TOTAL] = str(workers)
        member = {**metadata, "name": name, "labels": labels, "annotations": annotations}
        gang.append({**pod, "metadata": member, "spec": spec})
    return gang


def trial_service(
    namespace: str, experiment: str, trial: str, trial_uid: str, experiment_uid: str
) -> dict[str, Any]:
    """The headless Service that gives a gang's pods their DNS names. Controlled by the
    HPOTrial and owned by the experiment too, as a token block Secret is (pods.token_secret):
    an HPOTrial deleted by hand (`--cascade=orphan` or not) and put back under a new UID
    finds the Service still its experiment's, so its next gang is not refused as a name
    someone else holds, and no Service outlives the experiment with no owner."""
    labels = {LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial}
    also = owner_reference("HPOExperiment", experiment, experiment_uid)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": trial,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                owner_reference("HPOTrial", trial, trial_uid),
                {**also, "controller": False, "blockOwnerDeletion": False},
            ],
        },
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "publishNotReadyAddresses": True,
        },
    }


@dataclass(frozen=True)
class GangVerdict:
    """What one rank's end means: the attempt's end (None: it runs on) and the ranks to
    delete now (`graceful`: after the pod grace period, not at once)."""

    outcome: Outcome | None
    stop: tuple[int, ...] = ()
    graceful: bool = False


def rank_ended(rank: int, workers: int, outcome: Outcome | None) -> GangVerdict:
    """The attempt's end from one rank's (kubetune.gang's rules, for pods):

    * a rank evicted, preempted, deleted or lost with its node: the attempt is an
      interruption (resumed whole); the other ranks are deleted at once;
    * a rank that exits non-zero: the attempt fails with that code, the rank named in
      its reason; the others are deleted at once, not left in a collective;
    * rank 0 exiting 0: the attempt ends with rank 0's result; the others, which save
      their shards and exit on their own, are deleted only after the grace period;
    * a rank > 0 exiting 0: nothing yet (rank 0 speaks for the attempt).
    """
    if outcome is None or workers == 1:
        return GangVerdict(outcome)
    others = tuple(r for r in range(workers) if r != rank)
    if outcome.kind is ExitKind.EXITED and outcome.exit_code == 0:
        return GangVerdict(outcome, others, graceful=True) if rank == 0 else GangVerdict(None)
    text = f"rank {rank} of {workers}" + (f": {outcome.message}" if outcome.message else "")
    return GangVerdict(Outcome(outcome.kind, outcome.exit_code, text), others)


def gang_at_start(
    pods: Mapping[str, Mapping[str, Any]], trial: str, attempt: int, workers: int
) -> str:
    """What an operator (re)starting does with a running attempt, from its pods found
    (by name): "launch" when ranks are missing and none of those found has started
    (the operator died while creating the gang: the rest are created under the same
    names); "interrupt" when a rank is missing while others have started (it
    ran and is gone: a new rank must not join a running gang); "watch" otherwise."""
    names = attempt_pod_names(trial, attempt, workers)
    found = [pods[n] for n in names if n in pods]
    if len(found) == workers:
        return "watch"
    started = any(
        (p.get("spec") or {}).get("nodeName") or (p.get("status") or {}).get("phase") != "Pending"
        for p in found
    )
    return "interrupt" if started else "launch"


# How long part of a gang may hold nodes while its other ranks cannot be placed.
PARTIAL_GANG_SECONDS = env_seconds("KUBETUNE_PARTIAL_GANG_SECONDS", 300.0, positive=True)


@dataclass
class PartialGangs:
    """Attempts with some ranks placed on nodes and others not, since when: a gang that
    holds GPUs while waiting for the rest is released (an interruption, resumed later)
    after `PARTIAL_GANG_SECONDS`, so no two half-placed gangs wait for each other for
    ever. Fed by the pod watch."""

    placed: dict[tuple[int, int], dict[int, bool]] = field(default_factory=dict)
    since: dict[tuple[int, int], float] = field(default_factory=dict)

    def pod_seen(
        self,
        number: int,
        attempt: int,
        rank: int,
        workers: int,
        bound: bool,
        over: bool,
        now: float,
    ) -> None:
        key = (number, attempt)
        if over:  # the attempt ends with it
            self.placed.pop(key, None)
            self.since.pop(key, None)
            return
        ranks = self.placed.setdefault(key, {})
        ranks[rank] = bound
        partial = any(ranks.values()) and not (len(ranks) == workers and all(ranks.values()))
        if not partial:
            self.since.pop(key, None)
        else:
            self.since.setdefault(key, now)

    def overdue(self, now: float, timeout: float) -> list[tuple[int, int, list[int]]]:
        """(number, attempt, ranks still waiting) of the gangs partial for too long."""
        late = []
        for key, since in sorted(self.since.items()):
            if now - since >= timeout:
                waiting = [r for r, bound in sorted(self.placed[key].items()) if not bound]
                late.append((key[0], key[1], waiting))
        return late

    def forget(self, number: int, attempt: int) -> None:
        self.placed.pop((number, attempt), None)
        self.since.pop((number, attempt), None)
