"""How big a node pool should be, and which empty instances may go (pure).

`plan()` takes what the shell observed — the pool's configuration, its group's desired
size and instances, the pool's Nodes (with what runs on them) and the trial pods waiting
for the pool — and answers with a `Plan`: the desired size to set when the pool must
grow, the specific instances to remove when it may shrink, and nodes to uncordon.

The rules:

* **Demand.** Waiting trial pods (not yet bound to a node) are packed, largest first,
  into the free GPUs of the pool's schedulable nodes, then into instances that are still
  joining, then into instances the group is launching; what is left needs new nodes.
  Nodes that run anything are needed as they are.
* **Grow** at once to `needed` (busy nodes + nodes that take waiting pods + new nodes),
  never above `maxNodes` (nor the group's own maximum) and never below `minNodes`.
* **Shrink** only by removing specific instances whose node has run nothing for
  `scaleDownGraceSeconds` (oldest idle first; an empty node with a termination notice
  at once: it is going anyway, and terminating it lowers the desired size, where the
  reclaim would make the group launch a replacement), never below `max(needed, minNodes)`. The
  shell cordons each node, checks again that it is empty, and terminates that instance
  with `ShouldDecrementDesiredCapacity=True`; a node that runs a trial is never chosen.
  Instances that never joined as Nodes within `join_timeout` are removed the same way.
* **No grace beyond what can be used.** Given `demand_ceiling`, the most nodes the
  pool's experiments can still use at once (their engines' `slots_ahead`: none when
  every trial has started and no paused one can be resumed), idle nodes beyond it go
  after `surplusGraceSeconds` (default 0): the grace period waits for work that may
  come back, and none of theirs can. Never below `max(needed, minNodes, ceiling)`.
  A group still launching more instances than needed is lowered to what it needs, but
  never below its live instances (lowering desired capacity below them would let the
  group pick which instance to terminate).
* A node the operator cordoned for removal but that is needed again is uncordoned.

Time is a parameter (`now`) and the idle timers are state passed in and handed back
(`idle_since`), so the same inputs always give the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubetune.capacity.pools import NodePool

LIVE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService", "Running", "Unknown")
JOIN_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class PoolNode:
    """A Node of the pool, as the shell saw it."""

    name: str
    instance_id: str | None  # from spec.providerID (aws:///zone/i-...)
    gpus: int  # allocatable nvidia.com/gpu
    used_gpus: int = 0  # GPUs asked for by the pods bound to it
    busy: bool = False  # runs a pod that is not a DaemonSet's (a trial or anything else)
    ready: bool = True
    unschedulable: bool = False
    cordoned_by_us: bool = False  # cordoned by the operator for removal
    # A termination notice (kubetune.reclaim): the instance goes in two minutes anyway.
    reclaiming: bool = False


@dataclass(frozen=True)
class PendingPod:
    """A trial pod of the pool that no node has taken yet."""

    namespace: str
    name: str
    gpus: int


@dataclass(frozen=True)
class Instance:
    id: str
    state: str = "InService"  # the Auto Scaling group's lifecycle state
    launched_at: float | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class GroupState:
    """The scaled group: its desired size, its own bounds and its instances."""

    desired: int
    min_size: int = 0
    max_size: int = 1_000_000
    instances: Sequence[Instance] = ()
    # Whether one specific instance can be removed (an ASG, or an EKS node group whose ASG
    # is known). When False, the pool only shrinks when all its nodes are idle.
    can_remove_specific: bool = True


@dataclass(frozen=True)
class Removal:
    instance_id: str
    node: str | None  # None: the instance never joined as a Node


@dataclass(frozen=True)
class Plan:
    desired: int | None  # a new desired size to set (None: leave it)
    remove: tuple[Removal, ...] = ()
    uncordon: tuple[str, ...] = ()
    idle_since: Mapping[str, float] = field(default_factory=dict)
    needed: int = 0
    unfit: tuple[str, ...] = ()  # pods no node of the pool can ever hold
    reason: str = ""


def plan(
    pool: NodePool,
    group: GroupState,
    nodes: Sequence[PoolNode],
    pending: Sequence[PendingPod],
    now: float,
    idle_since: Mapping[str, float] | None = None,
    join_timeout: float = JOIN_TIMEOUT_SECONDS,
    demand_ceiling: int | None = None,
) -> Plan:
    """`demand_ceiling`: the most nodes the pool's trials can use at once from now on (None:
    not known, as many as `maxNodes`)."""
    per_node = pool.gpusPerNode
    ceiling = min(pool.maxNodes, group.max_size)
    floor = min(pool.minNodes, ceiling)
    live = [i for i in group.instances if i.live]
    node_of = {n.instance_id: n for n in nodes if n.instance_id}
    joining = [i for i in live if i.id not in node_of]
    launching = max(group.desired - len(live), 0)

    # Bins that waiting pods can go to, in the order they are preferred.
    busy = [n for n in nodes if n.busy]
    schedulable = [n for n in nodes if not n.unschedulable and n.ready]
    bins: list[tuple[str, int]] = []  # (key, free GPUs)
    bins += [(f"node:{n.name}", max(n.gpus - n.used_gpus, 0)) for n in schedulable if n.busy]
    bins += [(f"node:{n.name}", n.gpus) for n in schedulable if not n.busy]
    # A node cordoned for removal is reused only while its instance lives: once terminated,
    # its Node lingers through the shutdown, and a pod bound there would go down with it.
    live_ids = {i.id for i in live}
    bins += [
        (f"node:{n.name}", n.gpus)
        for n in nodes
        if n.cordoned_by_us and not n.busy and n.instance_id in live_ids
    ]
    bins += [(f"joining:{i.id}", per_node) for i in joining]
    bins += [(f"launching:{k}", per_node) for k in range(launching)]
    free = dict(bins)
    order = [key for key, _ in bins]
    used: set[str] = set()
    new_bins: list[int] = []
    unfit: list[str] = []
    for pod in sorted(pending, key=lambda p: (-p.gpus, p.namespace, p.name)):
        if pod.gpus > per_node:
            unfit.append(f"{pod.namespace}/{pod.name}")
            continue
        for key in order:
            if free[key] >= pod.gpus:
                free[key] -= pod.gpus
                used.add(key)
                break
        else:
            for index, room in enumerate(new_bins):
                if room >= pod.gpus:
                    new_bins[index] -= pod.gpus
                    break
            else:
                new_bins.append(per_node - pod.gpus)

    needed_nodes = {n.name for n in busy} | {
        key.removeprefix("node:") for key in used if key.startswith("node:")
    }
    needed_joining = {key.removeprefix("joining:") for key in used if key.startswith("joining:")}
    needed_launching = sum(key.startswith("launching:") for key in used)
    needed = len(needed_nodes) + len(needed_joining) + needed_launching + len(new_bins)
    target = min(max(needed, floor), ceiling)

    # Idle timers: a node is idle while it runs nothing and takes no waiting pod.
    previous = dict(idle_since or {})
    timers: dict[str, float] = {}
    for node in nodes:
        if node.name not in needed_nodes:
            timers[node.name] = previous.get(node.name, now)

    uncordon = tuple(sorted(n.name for n in nodes if n.cordoned_by_us and n.name in needed_nodes))
    reasons: list[str] = []
    if unfit:
        reasons.append(f"{len(unfit)} pod(s) ask for more than {per_node} GPUs per node")

    if target > group.desired:
        reasons.append(
            f"{len(pending)} trial pod(s) waiting: {group.desired} -> {target} nodes"
            + (f" (maxNodes {ceiling})" if needed > ceiling else "")
        )
        return Plan(target, (), uncordon, timers, needed, tuple(unfit), "; ".join(reasons))

    desired: int | None = None
    if group.desired > target and launching:
        # Launches not needed any more: lower the desired size, not below what runs.
        lowered = max(target, len(live))
        if lowered < group.desired:
            desired = lowered
    surplus = max(len(live), group.desired if desired is None else desired) - target
    removals: list[Removal] = []
    # Idle nodes that may go before their grace period: those beyond the ceiling. A busy
    # node being reclaimed or not ready holds a trial that will want another node.
    unusable = 0
    if demand_ceiling is not None:
        going = sum(n.busy and (n.reclaiming or not n.ready) for n in nodes)
        unusable = max(len(live) - max(target, demand_ceiling + going), 0)
    if surplus > 0:
        candidates: list[tuple[float, str, Removal]] = []
        early: list[tuple[float, str, Removal]] = []
        for node in nodes:
            if node.busy or node.name in needed_nodes or node.instance_id is None:
                continue
            idle_from = timers.get(node.name, now)
            removal = Removal(node.instance_id, node.name)
            # An empty node being reclaimed goes at once: no pod may land there, it bills
            # until it is gone, and its group would launch a replacement nobody asked for.
            if (
                node.cordoned_by_us
                or node.reclaiming
                or now - idle_from >= pool.scaleDownGraceSeconds
            ):
                first = -math.inf if node.reclaiming else idle_from  # reclaimed ones first
                candidates.append((first, node.name, removal))
            elif now - idle_from >= pool.surplusGraceSeconds:
                early.append((idle_from, node.name, removal))
        for instance in joining:
            if instance.id in needed_joining or instance.launched_at is None:
                continue
            if now - instance.launched_at >= join_timeout:
                candidates.append((instance.launched_at, instance.id, Removal(instance.id, None)))
        early.sort(key=lambda c: (c[0], c[1]))
        candidates += early[: max(unusable - len(candidates), 0)]
        candidates.sort(key=lambda c: (c[0], c[1]))
        chosen = [removal for _, _, removal in candidates[:surplus]]
        if not group.can_remove_specific:
            # Only the group picks which instance goes: safe only when none runs anything.
            removable = {r.instance_id for _, _, r in candidates}
            if all(i.id in removable for i in live):
                desired = target
                removals = [r for _, _, r in candidates]  # cordoned, all of them, first
            chosen = []
        removals = removals or chosen
        if removals:
            why = "past the grace period"
            if {removal for *_, removal in early} & set(removals):
                why += f" or beyond the {demand_ceiling} the pool's trials can still use"
            reasons.append(f"{len(removals)} idle node(s) {why}: -> {target}")
    if desired is not None and not removals:
        reasons.append(f"launches not needed any more: {group.desired} -> {desired}")
    return Plan(
        desired, tuple(removals), uncordon, timers, needed, tuple(unfit), "; ".join(reasons)
    )


def nodes_for(gpus: int, per_node: int) -> int:
    return math.ceil(gpus / per_node) if gpus > 0 else 0
