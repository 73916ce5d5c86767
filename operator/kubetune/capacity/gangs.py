"""Gang admission on a node pool: the pods of a distributed trial's attempt (a gang,
spec.workers > 1) are created only when the pool can hold all of them at once.

Without it, two gangs that each got part of a full pool would each hold GPUs while
waiting for the rest, for ever (kube-scheduler places pods one by one, not gangs). The
operator asks `GangAdmission.admit` before it creates an attempt's pods: the GPUs its
ranks ask for must fit in what the pool can ever have (`maxNodes` x `gpusPerNode` for a
scaled pool; the GPUs of its Nodes for a pool of `provider: none`) minus what the pool's
trial pods hold or wait for (every pod not Succeeded or Failed, terminating ones too:
their GPUs are not free yet), minus the gangs admitted since the capacity loop last
listed the pods. A gang that does not fit waits whole (no pod at all) and asks again;
the capacity loop's own scaling then sees only whole gangs waiting. An admitted gang
whose pods no listing shows yet is demand for the scaling too (`unlisted`): without
it, the nodes other gangs just left looked idle and were taken away in the instant
before the admitted gang's pods were created and bound there. Counting is in
GPUs: a pool whose nodes cannot be split evenly among the gang's pods (say 3-GPU pods
on 8-GPU nodes) may admit a gang that does not fit; the operator's partial-gang timeout
(operator/gang.py `PartialGangs`) releases such a gang.

Single-pod trials are not gated (as before): they never wait for a peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.capacity.kubeobjects import terminal
from kubetune.capacity.pools import GPU_RESOURCE, LABEL_POOL, NodePool, pod_gpus
from kubetune.capacity.scaling import PendingPod
from kubetune.names import LABEL_ATTEMPT, LABEL_TRIAL

# A gang admitted whose pods no listing has shown yet is counted for this long at most.
RESERVATION_SECONDS = 120.0

AttemptKey = tuple[str, str, str]  # namespace, trial, attempt


def attempt_key(pod: Mapping[str, Any]) -> AttemptKey:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return (
        str(metadata.get("namespace", "")),
        str(labels.get(LABEL_TRIAL, "")),
        str(labels.get(LABEL_ATTEMPT, "")),
    )


def pool_capacity(pool: NodePool, nodes: Iterable[Mapping[str, Any]]) -> int:
    """The most GPUs the pool can ever offer: scaled, up to maxNodes; else its Nodes'."""
    if pool.scalable:
        return pool.maxNodes * pool.gpusPerNode
    total = 0
    for node in nodes:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        total += int(str(allocatable.get(GPU_RESOURCE, "0")) or 0)
    return total


def held_gpus(pool: str, pods: Iterable[Mapping[str, Any]]) -> dict[AttemptKey, int]:
    """GPUs the pool's trial pods hold or wait for, by attempt (pods not over)."""
    held: dict[AttemptKey, int] = {}
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_POOL) != pool or terminal(pod):
            continue
        key = attempt_key(pod)
        held[key] = held.get(key, 0) + max(pod_gpus(pod), 1)
    return held


def admission(capacity: int, held: int, asked: int) -> str | None:
    """Why a gang asking `asked` GPUs waits (None: it fits now)."""
    if asked > capacity:
        return f"its pods ask for {asked} GPUs; the pool can never have more than {capacity}"
    if held + asked > capacity:
        return (
            f"its pods ask for {asked} GPUs and other trials' pods hold or wait for "
            f"{held} of the pool's {capacity}: it waits whole, with no pod, until they fit"
        )
    return None


@dataclass
class GangAdmission:
    """What the capacity loop last saw of each pool, and the gangs admitted since."""

    capacity: dict[str, int] = field(default_factory=dict)
    held: dict[str, dict[AttemptKey, int]] = field(default_factory=dict)
    # Admitted, not yet listed: attempt -> (pool, GPUs, when, pods).
    reserved: dict[AttemptKey, tuple[str, int, float, int]] = field(default_factory=dict)

    def observed(
        self,
        pools: Mapping[str, NodePool],
        nodes: Mapping[str, list[dict[str, Any]]],
        pods: list[dict[str, Any]],
        now: float,
    ) -> None:
        """A tick's listing: `nodes` by pool, every trial pod."""
        for name, pool in pools.items():
            self.capacity[name] = pool_capacity(pool, nodes.get(name, []))
            self.held[name] = held_gpus(name, pods)
        listed = {attempt_key(p) for p in pods}
        for key, (_, _, at, _) in list(self.reserved.items()):
            if key in listed or now - at > RESERVATION_SECONDS:
                del self.reserved[key]

    def admit(
        self, pool: str, key: AttemptKey, asked: int, now: float, pods: int = 1
    ) -> str | None:
        """Admit the attempt's gang of `pods` pods asking `asked` GPUs in all (counted
        from now on), or say why it waits."""
        held = self.held.get(pool, {})
        if key in held or key in self.reserved:
            return None  # already counted: its pods exist (some ranks of it, say)
        if pool not in self.capacity:
            return "the capacity loop has not listed the pool's nodes and pods yet"
        taken = sum(held.values()) + sum(g for p, g, _, _ in self.reserved.values() if p == pool)
        why = admission(self.capacity[pool], taken, asked)
        if why is None:
            self.reserved[key] = (pool, asked, now, max(pods, 1))
        return why

    def unlisted(self, pool: str, listed: set[AttemptKey]) -> dict[AttemptKey, list[PendingPod]]:
        """The pods of the gangs admitted on `pool` that are not in `listed` (attempts
        whose pods a listing showed), as pods waiting for a node, by attempt."""
        found: dict[AttemptKey, list[PendingPod]] = {}
        for key, (where, asked, _, pods) in self.reserved.items():
            if where != pool or key in listed:
                continue
            namespace, trial, attempt = key
            each = max(asked // pods, 1)
            found[key] = [
                PendingPod(namespace, f"{trial}-a{attempt}-r{rank} (admitted)", each)
                for rank in range(pods)
            ]
        return found
