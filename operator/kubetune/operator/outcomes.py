"""What a Pod's state means for its trial attempt, and what a refused Pod means (pure).

A trial's pod deleted by anyone but the operator (`kubectl delete pod`, a drain without
the eviction API, the garbage collector after its HPOTrial was deleted) is an
*interruption*, as an eviction (a `DisruptionTarget` condition) or a lost node is: the
trial did nothing wrong, so it resumes from its checkpoint on a new pod, counted in
`status.interruptions` and not toward `maxFailedTrials`. Its container's exit code
(143 after SIGTERM) is not the code's failure, and neither is an exit 0 after the
deletion was asked for (a script that stops cleanly on SIGTERM has not finished). The
operator's own deletions (a stop, a pause of a trial without the SDK) end as the engine
decided before it deleted the pod.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubetune.events import ExitKind
from kubetune.timestamps import parse_rfc3339

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
        if _ended_by_deletion(pod, terminated):
            # SIGTERM from a deletion, and the script left cleanly (it broke out of its
            # loop on the SDK's pause without saving): not a finished trial.
            return Outcome(ExitKind.INTERRUPTED, None, "pod deleted (exit code 0)")
        return Outcome(ExitKind.EXITED, 0, "")
    if phase == "Failed":
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not disrupted:
            code = (terminated or {}).get("exitCode")
            how = f" (exit code {code})" if code is not None else ""
            return Outcome(ExitKind.INTERRUPTED, None, f"pod deleted{how}")
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


def _ended_by_deletion(pod: dict[str, Any], terminated: dict[str, Any] | None) -> bool:
    """Whether the container ended after someone asked to delete its pod: the deletion's
    request time is its deletionTimestamp less its grace period."""
    metadata = pod.get("metadata") or {}
    deadline = parse_rfc3339(metadata.get("deletionTimestamp"))
    finished = parse_rfc3339((terminated or {}).get("finishedAt"))
    if deadline is None or finished is None:
        return False
    return finished >= deadline - float(metadata.get("deletionGracePeriodSeconds") or 0)


def _terminated(status: dict[str, Any]) -> dict[str, Any] | None:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def pod_node(pod: dict[str, Any]) -> str | None:
    return (pod.get("spec") or {}).get("nodeName")


class Refusal(StrEnum):
    QUOTA = "quota"  # wait and retry: the quota may free up
    INVALID = "invalid"  # the pod can never be created as it is: the trial fails


def refusal(status: int, message: str) -> Refusal | None:
    """What an API error from creating a trial's pod or Secret means; None: transient
    (a 5xx, a 429, a timeout), retried by the next reconcile."""
    if status == 403 and "exceeded quota" in message:
        return Refusal.QUOTA
    if status in (400, 403, 413, 422):  # malformed, forbidden (Pod Security), invalid
        return Refusal.INVALID
    return None


def api_status(body: str | bytes | None) -> dict[str, Any]:
    """The Kubernetes Status in an API error's body; {} when it is not one."""
    try:
        found = json.loads(body or b"")
    except (ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def namespace_terminating(status: int, body: str | bytes | None) -> bool:
    """Whether an API error is the NamespaceLifecycle admission's refusal to create
    anything in a namespace being deleted: the experiment goes with it, so nothing is to
    be created, retried or failed for it (a namespace deleted under 128 trials logged
    128 tracebacks and tried to put every HPOTrial back)."""
    if status != 403:
        return False
    details = api_status(body).get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return False
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


def api_message(body: str | bytes | None, fallback: str = "", limit: int = 1000) -> str:
    """The `message` of a Kubernetes Status in an error's body, bounded."""
    text = str(api_status(body).get("message") or fallback or "refused")
    return text if len(text) <= limit else text[:limit] + "..."
