"""The most nodes each pool's experiments can still use at once (pure): the capacity
loop lets idle nodes beyond it go without the pool's grace period (`scaling.plan`'s
`demand_ceiling`).

Each experiment's engine says how many of its trials may hold a slot at once from now on
(`Engine.slots_ahead`); each such trial is `spec.workers` pods, and a pod needs at most a
node. An experiment whose engine is not rebuilt yet, or whose scheduler cannot say,
leaves its pool's ceiling unknown (None), and so does a loop that has not yet run for
`settle` seconds (or the pool's grace period, if shorter): an operator just started may
not have been told of every experiment yet (kopf lists them all within seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kubetune.capacity.pools import NodePool
from kubetune.spec import ExperimentSpec

SETTLE_SECONDS = 60.0


ExperimentKey = tuple[str, str]  # (namespace, name)


def pool_ceilings(
    pools: Mapping[str, NodePool],
    experiments: Mapping[ExperimentKey, tuple[ExperimentSpec, int | None]],
    pods: Iterable[tuple[str, ExperimentKey]],
    running_for: float,
    settle: float = SETTLE_SECONDS,
) -> dict[str, int | None]:
    """`experiments`: each experiment's spec and its `slots_ahead` (None: not known);
    `pods`: the pool and experiment of each trial pod listed, so that a pod of an
    experiment this operator does not hold (another namespace's operator, one not yet
    delivered, one deleted) leaves its pool unknown; `running_for`: seconds since the
    loop's first tick. A pool no experiment uses has a ceiling of 0."""
    ceilings: dict[str, int | None] = {
        name: 0 if running_for >= min(settle, pool.scaleDownGraceSeconds) else None
        for name, pool in pools.items()
    }
    for spec, slots in experiments.values():
        if spec.capacity is None or spec.capacity.nodePool not in ceilings:
            continue
        pool = spec.capacity.nodePool
        known = ceilings[pool]
        ceilings[pool] = None if known is None or slots is None else known + slots * spec.workers
    for pool, experiment in pods:
        if pool in ceilings and experiment not in experiments:
            ceilings[pool] = None
    return ceilings
