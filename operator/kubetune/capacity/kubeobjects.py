"""What the capacity loop reads off Nodes and pods (pure helpers), and where its
measures go (`CapacityMetrics`: an `observability.Observer` in the operator)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, Protocol

from kubetune.capacity import cost as costs
from kubetune.capacity.pools import GPU_RESOURCE, LABEL_POOL, container_gpus
from kubetune.names import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL
from kubetune.timestamps import parse_rfc3339

logger = logging.getLogger(__name__)


class CoreApi(Protocol):
    """What the capacity loop calls of a kubernetes `CoreV1Api` (tests pass a fake).
    Objects are read raw (`_preload_content=False`) and written as plain dicts."""

    def read_namespaced_config_map(
        self, name: str, namespace: str, *, _preload_content: bool = ...
    ) -> Any: ...

    def list_node(self, *, _preload_content: bool = ...) -> Any: ...

    def list_pod_for_all_namespaces(
        self,
        *,
        _preload_content: bool = ...,
        label_selector: str | None = ...,
        field_selector: str | None = ...,
    ) -> Any: ...

    def patch_node(self, name: str, body: Any) -> Any: ...

    def create_namespaced_event(self, namespace: str, body: Any) -> Any: ...


class CapacityMetrics(Protocol):
    """Where the capacity loop's measures go (`observability.Observer` has these)."""

    def observe_node_pool(
        self,
        pool: str,
        desired: int,
        current: int,
        maximum: int | None = None,
        pending_pods: int | None = None,
    ) -> None: ...

    def observe_spot_interruption(self, pool: str, count: int = 1) -> None: ...

    def observe_cost(self, namespace: str, experiment: str, usd: float) -> None: ...


class NoMetrics:
    """Measures counted nowhere (a loop built without an operator around it)."""

    def observe_node_pool(
        self,
        pool: str,
        desired: int,
        current: int,
        maximum: int | None = None,
        pending_pods: int | None = None,
    ) -> None:
        return None

    def observe_spot_interruption(self, pool: str, count: int = 1) -> None:
        return None

    def observe_cost(self, namespace: str, experiment: str, usd: float) -> None:
        return None


P = ParamSpec("P")


def observe(measure: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    try:
        measure(*args, **kwargs)
    except Exception:  # metrics never stop the loop
        logger.debug("a capacity metric failed", exc_info=True)


def instance_id(node: Mapping[str, Any]) -> str | None:
    """The EC2 instance behind a Node: `spec.providerID` is `aws:///us-east-1a/i-0abc`."""
    provider = (node.get("spec") or {}).get("providerID") or ""
    last = provider.rsplit("/", 1)[-1]
    return last if provider.startswith("aws://") and last.startswith("i-") else None


def terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def waits_for_node(pod: Mapping[str, Any]) -> bool:
    """A pod no node has taken yet that still wants one (not over, not being deleted)."""
    return (
        not (pod.get("spec") or {}).get("nodeName")
        and not terminal(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def daemon(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    if "kubernetes.io/config.mirror" in (metadata.get("annotations") or {}):
        return True
    return any(ref.get("kind") == "DaemonSet" for ref in metadata.get("ownerReferences") or [])


def experiment_of(pod: Mapping[str, Any]) -> costs.ExperimentKey | None:
    metadata = pod.get("metadata") or {}
    name = (metadata.get("labels") or {}).get(LABEL_EXPERIMENT)
    return (metadata.get("namespace", ""), name) if name else None


def usage_times(pod: Mapping[str, Any], now: float) -> tuple[float | None, float | None]:
    """When the trial container ran: started, and finished (None while it runs)."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "running" in state:
            return parse_rfc3339(state["running"].get("startedAt")), None
        if "terminated" in state:
            ended = state["terminated"]
            finished = parse_rfc3339(ended.get("finishedAt")) or now
            return parse_rfc3339(ended.get("startedAt")), finished
    if status.get("phase") == "Running":
        return parse_rfc3339(status.get("startTime")), None
    return None, None


# The labels the capacity loop reads of a trial pod (gangs.attempt_key, experiment_of,
# the pool's pods); an ended pod keeps these and no other.
_READ_LABELS = (LABEL_EXPERIMENT, LABEL_POOL, LABEL_TRIAL, LABEL_ATTEMPT)
# What `usage_times` reads of a container's state.
_RUN_TIMES = ("startedAt", "finishedAt")


def ended_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A listed trial pod that has ended (Succeeded or Failed), cut to what the capacity
    loop reads of an ended pod: its name, namespace, uid and kubetune labels, its node,
    its GPUs, its phase and its container's run (`usage_times`). Any other pod is
    returned as it is; so is one the cut cannot read (a malformed object: the caller
    keeps it whole, as before).

    A tick lists every trial pod, ended ones too (their exact run times price the last
    window, and a restarted operator prices the time no operator watched from them):
    at 10,000 trials about 15,000 pods, 7 KB each even without what `lean` drops, held
    at once (bench/scale.py). The strings many pods share (namespace, labels but the
    trial's, node, phase) are interned: one copy for all of them."""
    if not terminal(pod) or daemon(pod):
        return pod
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    kept_metadata = {key: metadata[key] for key in ("name", "uid") if key in metadata}
    if "namespace" in metadata:
        kept_metadata["namespace"] = _interned(metadata["namespace"])
    kept_metadata["labels"] = {
        key: labels[key] if key == LABEL_TRIAL else _interned(labels[key])
        for key in _READ_LABELS
        if key in labels
    }
    spec = pod.get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    status = pod.get("status") or {}
    skeleton: dict[str, Any] = {
        "metadata": kept_metadata,
        "spec": {
            "nodeName": _interned(spec.get("nodeName")),
            "containers": _gpu_containers(container_gpus(containers)),
        },
        "status": {"phase": _interned(status.get("phase"))},
    }
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        for how in ("running", "terminated"):
            if how in state:
                times = {k: v for k, v in state[how].items() if k in _RUN_TIMES}
                skeleton["status"]["containerStatuses"] = [{"state": {how: times}}]
                return skeleton
    return skeleton


def _interned(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=64)
def _gpu_containers(gpus: int) -> list[dict[str, Any]]:
    """One container asking `gpus` GPUs (none: no container), the same list for every
    ended pod asking as many: nothing writes to it."""
    return [{"resources": {"limits": {GPU_RESOURCE: str(gpus)}}}] if gpus else []
