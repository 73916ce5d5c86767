"""Kubernetes Events from kubetune: the object a user runs `kubectl describe` on.

A neutral module: the operator (trial and experiment Events) and the capacity loop
(node-pool Events) both post through it, and neither imports the other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from kubetune.names import GROUP, VERSION

MESSAGE_LIMIT = 1024  # the most characters of a message posted


def event_body(
    involved: dict[str, Any],
    kind: str,
    reason: str,
    message: str,
    warning: bool = False,
    count: int = 1,
    since: float | None = None,
) -> client.CoreV1Event:
    """A Kubernetes Event from kubetune-operator about the object `involved`; `count`
    occurrences, the first at `since` (a POSIX time; default now), the last now."""
    metadata = involved["metadata"]
    now = datetime.now(UTC)
    first = now if since is None else min(now, datetime.fromtimestamp(since, UTC))
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(
            generate_name=f"{metadata['name']}.", namespace=metadata["namespace"]
        ),
        involved_object=client.V1ObjectReference(
            api_version=involved.get("apiVersion", f"{GROUP}/{VERSION}"),
            kind=kind,
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata.get("uid"),
        ),
        reason=reason,
        message=message[:MESSAGE_LIMIT],
        type="Warning" if warning else "Normal",
        first_timestamp=first,
        last_timestamp=now,
        count=count,
        source=client.V1EventSource(component="kubetune-operator"),
    )
