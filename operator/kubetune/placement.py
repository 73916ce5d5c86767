"""Where the operator and the capacity loop meet, without importing each other.

The capacity loop decides where an experiment's trial pods go (`Placement`) and keeps
each live experiment's cost and node-pool condition up to date; the operator builds
the pods and owns the experiments. Each sees the other only through the Protocols
here, and the process entry point (kubetune.operator.main) wires them together.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune.names import LABEL_POOL
from kubetune.spec import ExperimentSpec


@dataclass(frozen=True)
class Placement:
    """What a trial pod needs to land on a pool's nodes."""

    pool: str
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]] = field(default_factory=tuple)


def apply_placement(pod: dict[str, Any], where: Placement) -> dict[str, Any]:
    """A copy of `pod` with the pool's node selector, tolerations and pool label added.

    The template's own nodeSelector entries stay unless the pool sets the same key; its
    tolerations stay and the pool's are added once.
    """
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **where.node_selector}
    tolerations = list(spec.get("tolerations") or [])
    for toleration in where.tolerations:
        if dict(toleration) not in tolerations:
            tolerations.append(dict(toleration))
    if tolerations:
        spec["tolerations"] = tolerations
    pod["metadata"].setdefault("labels", {})[LABEL_POOL] = where.pool
    return pod


class PlacementSource(Protocol):
    """What the operator asks of the capacity loop (CapacityManager implements it)."""

    def placement_for(self, spec: ExperimentSpec) -> Placement | None:
        """Where the experiment's trial pods go (None: anywhere)."""
        ...

    def check(self, spec: ExperimentSpec) -> str | None:
        """Why the experiment cannot run here (an unknown pool), or None."""
        ...

    def check_workers(self, spec: ExperimentSpec) -> str | None:
        """Why a distributed trial's gang can never fit its node pool, or None."""
        ...

    def admit_gang(
        self, spec: ExperimentSpec, namespace: str, trial: str, attempt: int
    ) -> str | None:
        """Why a distributed trial's attempt waits whole for room on its node pool
        (None: create its pods now)."""
        ...


class CostTarget(Protocol):
    """What the capacity loop hands its results to (an operator's experiment controller)."""

    spec: ExperimentSpec
    body: dict[str, Any]
    cost_usd: float | None  # as stored in its status by an earlier operator
    cost_at: float | None  # accounted up to then (None: not stored)

    async def capacity_update(
        self,
        usd: float,
        trial_usd_per_hour: float,
        condition: dict[str, Any] | None,
        accounted_at: float | None = None,
    ) -> None: ...
