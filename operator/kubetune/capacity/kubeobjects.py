"""What the capacity loop reads off Nodes and pods, and its metrics hook (pure helpers)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubetune.capacity import cost as costs
from kubetune.names import LABEL_EXPERIMENT
from kubetune.timestamps import parse_rfc3339

logger = logging.getLogger(__name__)

try:  # the metrics of kubetune.observability, when that part is installed
    from kubetune import observability as _observability
except ImportError:  # pragma: no cover
    _observability = None  # type: ignore[assignment]


def observe(name: str, *args: Any, **kwargs: Any) -> None:
    function = getattr(_observability, name, None)
    if function is None:
        return
    try:
        function(*args, **kwargs)
    except Exception:  # metrics never stop the loop
        logger.debug("observability.%s failed", name, exc_info=True)


def instance_id(node: Mapping[str, Any]) -> str | None:
    """The EC2 instance behind a Node: `spec.providerID` is `aws:///us-east-1a/i-0abc`."""
    provider = (node.get("spec") or {}).get("providerID") or ""
    last = provider.rsplit("/", 1)[-1]
    return last if provider.startswith("aws://") and last.startswith("i-") else None


def terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


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
