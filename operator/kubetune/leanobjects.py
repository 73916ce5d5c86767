"""Kubernetes objects as kubetune keeps them from a LIST: without what it never reads."""

from __future__ import annotations

from typing import Any


def lean(item: dict[str, Any]) -> dict[str, Any]:
    """A listed Node or Pod with what neither the capacity loop nor the pod watch reads
    left out: its managedFields, a node's image list, a pod's volumes and its
    containers' all but name and resources (a trial pod's env and command are most of
    its JSON). The capacity loop lists every trial pod at each tick, ended ones too: at
    1,000 trials that listing held about 50 MB at once, the operator's peak memory
    (bench/scale.py)."""
    metadata = item.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    spec = item.get("spec")
    if isinstance(spec, dict):
        spec.pop("volumes", None)
        for key in ("containers", "initContainers"):
            containers = spec.get(key)
            if isinstance(containers, list):
                spec[key] = [
                    {"name": c.get("name"), "resources": c.get("resources") or {}}
                    for c in containers
                    if isinstance(c, dict)
                ]
    status = item.get("status")
    if isinstance(status, dict):
        status.pop("images", None)
    return item
