"""What nodes cost, and which experiment pays (pure).

**Prices.** A node's hourly price is the spot price of its instance type in its zone
(from `DescribeSpotPriceHistory`; the highest zone's when the zone is unknown) when it is
a spot node, the configured `onDemandPriceUSDPerHour` of its instance type otherwise.

**Run time.** A node costs from its creation until it is gone (Node objects'
`creationTimestamp`, and the moment the shell stops seeing them). A node first seen at a
window's end may be stamped before the window began: the stamp has whole seconds, so a
node created just after the last tick's list can carry an earlier second. That part was
in no window, so the window that first sees a node counts it from its stamp, at most
`STAMP_RESOLUTION_SECONDS` before the window: a node older than that was there before
the last tick and not seen as the pool's (labelled into it since, or missed by a list),
and its time before it joined is not the pool's.

**Attribution.** Time is cut into windows (the shell's ticks). In each window a pool's
cost — the sum over its nodes of price times the part of the window they ran — is split
between experiments in proportion to the GPU-seconds their trial pods ran on the pool's
nodes in that window. A window with no trial running on the pool goes to the
experiments whose trial pods wait for it (they made it grow), in proportion to the GPUs
they wait for (pods that started just at the window's end waited through it); a window
with neither is the idle tail the pool's last users left behind (the grace period, then
the removal of the nodes): the nodes above `minNodes` go to those users, in proportion
to their last GPU-seconds, and the `minNodes` floor to nobody (an idle pool kept warm
is the platform's cost, not an experiment's).

`Ledger` keeps the running totals; `attribute_window` is the arithmetic, tested by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kubetune.capacity.pools import CapacityType, NodePool

ExperimentKey = tuple[str, str]  # (namespace, name)

STAMP_RESOLUTION_SECONDS = 1.0  # Kubernetes' timestamps have whole seconds

SPOT_LABELS = {
    "karpenter.sh/capacity-type": {"spot": True, "on-demand": False},
    "eks.amazonaws.com/capacityType": {"SPOT": True, "ON_DEMAND": False},
    "node.kubernetes.io/lifecycle": {"spot": True, "normal": False},
}
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class SpotPrice:
    instance_type: str
    zone: str
    usd_per_hour: float
    at: float  # when this price took effect


def latest_spot_prices(history: Iterable[SpotPrice]) -> dict[tuple[str, str], float]:
    """The price in effect now per (instance type, zone): the latest entry of each."""
    latest: dict[tuple[str, str], SpotPrice] = {}
    for entry in history:
        key = (entry.instance_type, entry.zone)
        if key not in latest or entry.at >= latest[key].at:
            latest[key] = entry
    return {key: entry.usd_per_hour for key, entry in latest.items()}


def is_spot(pool: NodePool, labels: Mapping[str, str]) -> bool:
    for label, values in SPOT_LABELS.items():
        if labels.get(label) in values:
            return values[labels[label]]
    return pool.capacityType is CapacityType.SPOT


def node_price(
    pool: NodePool,
    labels: Mapping[str, str],
    spot_prices: Mapping[tuple[str, str], float],
) -> float | None:
    """USD per hour for one node of `pool` with these labels; None when unknown."""
    instance_type = labels.get(INSTANCE_TYPE_LABEL)
    if instance_type is None and len(pool.instanceTypes) == 1:
        instance_type = pool.instanceTypes[0]
    if instance_type is None:
        return None
    if is_spot(pool, labels):
        zone = labels.get(ZONE_LABEL)
        if zone is not None and (instance_type, zone) in spot_prices:
            return spot_prices[(instance_type, zone)]
        zones = [p for (kind, _), p in spot_prices.items() if kind == instance_type]
        if zones:
            return max(zones)
    return pool.onDemandPriceUSDPerHour.get(instance_type)


def expected_node_price(
    pool: NodePool, spot_prices: Mapping[tuple[str, str], float]
) -> float | None:
    """What a new node of the pool will cost per hour (its first instance type's price)."""
    return node_price(pool, {INSTANCE_TYPE_LABEL: pool.instanceTypes[0]}, spot_prices)


@dataclass(frozen=True)
class NodeSpan:
    node: str
    pool: str
    start: float
    end: float | None  # None: still running
    usd_per_hour: float
    new: bool = False  # first seen at this window's end: counted from up to a second before


@dataclass(frozen=True)
class UsageSpan:
    """A trial pod that ran on a pool's node: `gpus` GPUs from `start` to `end`."""

    experiment: ExperimentKey
    pool: str
    gpus: int
    start: float
    end: float | None


def overlap(start: float, end: float | None, t0: float, t1: float) -> float:
    return max(min(t1, end if end is not None else t1) - max(t0, start), 0.0)


@dataclass(frozen=True)
class WindowCost:
    pool_usd: dict[str, float]
    experiment_usd: dict[ExperimentKey, float]
    unattributed_usd: dict[str, float]
    weights: dict[str, dict[ExperimentKey, float]]  # GPU-seconds used, by pool


def attribute_window(
    t0: float,
    t1: float,
    nodes: Iterable[NodeSpan],
    usage: Iterable[UsageSpan],
    waiting: Mapping[str, Mapping[ExperimentKey, int]] | None = None,
    recent: Mapping[str, Mapping[ExperimentKey, float]] | None = None,
    floors: Mapping[str, int] | None = None,
) -> WindowCost:
    """The cost of the window [t0, t1], by pool and by experiment (see the module doc).

    `waiting`: GPUs the experiments' pending pods wait for, by pool. `recent`: weights of
    the pools' last users. `floors`: the pools' `minNodes`.
    """
    pool_usd: dict[str, float] = {}
    alive: dict[str, int] = {}
    for node in nodes:
        since = t0 - STAMP_RESOLUTION_SECONDS if node.new else t0
        seconds = overlap(node.start, node.end, since, t1)
        pool_usd[node.pool] = pool_usd.get(node.pool, 0.0) + seconds * node.usd_per_hour / 3600
        alive[node.pool] = alive.get(node.pool, 0) + (seconds > 0)
    used: dict[str, dict[ExperimentKey, float]] = {}
    # Pods that started running at the window's very end waited through it (a pool that
    # booted for them): the tick sees them bound, no longer waiting, yet they made it grow.
    arrived: dict[str, dict[ExperimentKey, int]] = {}
    for span in usage:
        seconds = overlap(span.start, span.end, t0, t1)
        if seconds > 0 and span.gpus > 0:
            by_experiment = used.setdefault(span.pool, {})
            by_experiment[span.experiment] = (
                by_experiment.get(span.experiment, 0.0) + span.gpus * seconds
            )
        elif span.gpus > 0 and t0 < span.start <= t1:
            late = arrived.setdefault(span.pool, {})
            late[span.experiment] = late.get(span.experiment, 0) + span.gpus
    experiment_usd: dict[ExperimentKey, float] = {}
    unattributed: dict[str, float] = {}
    for pool, usd in pool_usd.items():
        share = 1.0
        waited = {**arrived.get(pool, {}), **((waiting or {}).get(pool) or {})}
        weights = used.get(pool) or {key: float(gpus) for key, gpus in waited.items() if gpus}
        if not weights:  # the idle tail: the nodes above the floor
            weights = dict((recent or {}).get(pool) or {})
            count = alive.get(pool, 0)
            floor = (floors or {}).get(pool, 0)
            share = max(count - floor, 0) / count if count else 0.0
        total = sum(weights.values())
        if total <= 0 or share <= 0:
            unattributed[pool] = usd
            continue
        if share < 1.0:
            unattributed[pool] = usd * (1.0 - share)
        for key, weight in weights.items():
            experiment_usd[key] = experiment_usd.get(key, 0.0) + usd * share * weight / total
    return WindowCost(pool_usd, experiment_usd, unattributed, used)


@dataclass
class Ledger:
    """Running totals: by experiment (seeded from their stored status) and by pool."""

    experiments: dict[ExperimentKey, float] = field(default_factory=dict)
    pools: dict[str, float] = field(default_factory=dict)
    unattributed: dict[str, float] = field(default_factory=dict)
    last_users: dict[str, dict[ExperimentKey, float]] = field(default_factory=dict)

    def seed(self, key: ExperimentKey, usd: float | None) -> None:
        if key not in self.experiments:
            self.experiments[key] = float(usd or 0.0)

    def advance(
        self,
        t0: float,
        t1: float,
        nodes: Iterable[NodeSpan],
        usage: Iterable[UsageSpan],
        waiting: Mapping[str, Mapping[ExperimentKey, int]],
        floors: Mapping[str, int] | None = None,
    ) -> WindowCost:
        """Account the window [t0, t1]; the pools' last users carry the idle tail."""
        window = attribute_window(t0, t1, nodes, usage, waiting, self.last_users, floors)
        for pool, weights in window.weights.items():
            if weights:
                self.last_users[pool] = dict(weights)
        for key, usd in window.experiment_usd.items():
            self.experiments[key] = self.experiments.get(key, 0.0) + usd
        for pool, usd in window.pool_usd.items():
            self.pools[pool] = self.pools.get(pool, 0.0) + usd
        for pool, usd in window.unattributed_usd.items():
            self.unattributed[pool] = self.unattributed.get(pool, 0.0) + usd
        return window


def trial_usd_per_hour(node_usd_per_hour: float, gpus_per_node: int, trial_gpus: int) -> float:
    """What one trial costs per hour: its share of a node by GPUs (one GPU's share when it
    asks for none)."""
    return node_usd_per_hour * max(trial_gpus, 1) / gpus_per_node
