"""What a Pod's state means for its trial attempt (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.events import ExitKind

# Pod failure reasons that say the node or the cluster took the pod away, not the code.
INTERRUPTION_REASONS = frozenset(
    {
        "Evicted",
        "Preempting",
        "NodeLost",
        "NodeShutdown",
        "Shutdown",
        "Terminated",
        "DeletionByTaintManager",
        "TerminationByKubelet",
        "UnexpectedAdmissionError",
    }
)


@dataclass(frozen=True)
class Outcome:
    kind: ExitKind
    exit_code: int | None
    message: str


def attempt_outcome(pod: dict[str, Any], deleted: bool) -> Outcome | None:
    """The end of the attempt this Pod ran, or None while it has not ended."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    reason = status.get("reason") or ""
    disrupted = [
        c
        for c in status.get("conditions") or []
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
    ]
    terminated = _terminated(status)
    if phase == "Succeeded":
        return Outcome(ExitKind.EXITED, 0, "")
    if phase == "Failed":
        if reason in INTERRUPTION_REASONS or disrupted:
            why = disrupted[0].get("reason", reason) if disrupted else reason
            message = status.get("message") or (
                disrupted[0].get("message", "") if disrupted else ""
            )
            return Outcome(ExitKind.INTERRUPTED, None, f"{why}: {message}".strip(": "))
        code = terminated.get("exitCode") if terminated else None
        message = (terminated or {}).get("message") or (terminated or {}).get("reason") or reason
        return Outcome(ExitKind.EXITED, code if code is not None else 1, message or "pod failed")
    if deleted:
        # Gone before it finished: its node was deleted, or someone deleted it.
        return Outcome(ExitKind.INTERRUPTED, None, "pod deleted before it finished")
    return None


def _terminated(status: dict[str, Any]) -> dict[str, Any] | None:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def pod_node(pod: dict[str, Any]) -> str | None:
    return (pod.get("spec") or {}).get("nodeName")
