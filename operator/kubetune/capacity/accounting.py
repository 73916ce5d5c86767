"""Cost accounting of the capacity loop: what each experiment's trial pods cost.

Nodes are priced by their pool (on-demand, or the spot price of the zone and instance
type), trial pods take their GPUs' share of their node (`cost.Ledger`); what the
cluster still shows of the time before this operator started is kept aside to price
the time no operator was watching.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubetune.capacity import cost as costs
from kubetune.capacity.aws import AwsError, SpotPriceBook
from kubetune.capacity.kubeobjects import (
    CapacityMetrics,
    NoMetrics,
    experiment_of,
    observe,
    terminal,
    usage_times,
)
from kubetune.capacity.pools import (
    LABEL_POOL,
    CapacityType,
    NodePool,
    node_in_pool,
    pod_gpus,
    trial_gpus,
)
from kubetune.placement import CostTarget
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import parse_rfc3339

logger = logging.getLogger(__name__)


class CostBook:
    def __init__(self, spot: SpotPriceBook | None, metrics: CapacityMetrics | None = None) -> None:
        self.spot = spot
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.ledger = costs.Ledger()
        self.nodes: dict[str, tuple[str, float, float]] = {}  # name -> (pool, start, $/h)
        self.usage: dict[str, costs.UsageSpan] = {}  # pod uid -> span
        self.last_tick: float | None = None
        self.bases: dict[costs.ExperimentKey, tuple[str | None, float]] = {}
        self.terminated: set[str] = set()  # nodes whose instance the operator terminated
        # Nodes the last tick no longer saw, accounted up to it: one seen again now (its
        # pool label put back, say) is not counted back into that time (cost.NodeSpan.new).
        self.dropped: set[str] = set()
        self.prices: dict[str, dict[tuple[str, str], float]] = {}
        self.first_sight: (
            tuple[float, list[costs.NodeSpan], list[costs.UsageSpan], dict[str, int]] | None
        ) = None

    async def account(
        self,
        pools: Mapping[str, NodePool],
        now: float,
        nodes: list[dict[str, Any]],
        pods: list[dict[str, Any]],
    ) -> None:
        """Account the window since the last tick from the Nodes and trial pods seen now."""
        prices: dict[str, dict[tuple[str, str], float]] = {}
        for pool in pools.values():
            if pool.region and self.spot is not None and pool.capacityType is CapacityType.SPOT:
                try:
                    await self.spot.refresh(pool.region, pool.instanceTypes)
                except AwsError as error:
                    logger.warning("node pool %s: spot prices: %s", pool.name, error)
            prices[pool.name] = self.spot.for_region(pool.region) if self.spot else {}
        seen: set[str] = set()
        new: set[str] = set()  # not seen at the last tick (this operator's first: none)
        spans: list[costs.NodeSpan] = []
        pool_of_node: dict[str, str] = {}
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            home = next((p for p in pools.values() if node_in_pool(p, labels)), None)
            if home is None:
                continue
            name = node["metadata"]["name"]
            seen.add(name)
            pool_of_node[name] = home.name
            price = costs.node_price(home, labels, prices[home.name]) or 0.0
            start = parse_rfc3339(node["metadata"].get("creationTimestamp")) or now
            if name not in self.nodes and name not in self.dropped and self.last_tick is not None:
                new.add(name)
            self.nodes[name] = (home.name, start, price)
        self.dropped = set()
        for name, (pool_name, start, price) in list(self.nodes.items()):
            end = None if name in seen else now
            spans.append(costs.NodeSpan(name, pool_name, start, end, price, name in new))
            if end is not None:
                del self.nodes[name]  # accounted up to now, this once more
                self.dropped.add(name)
                if name in self.terminated:
                    self.terminated.discard(name)
                elif pool_name in pools and pools[pool_name].capacityType is (CapacityType.SPOT):
                    # Gone without the operator removing it: a spot reclaim (or a person).
                    logger.info("node pool %s: node %s is gone (spot reclaim?)", pool_name, name)
                    observe(self.metrics.observe_spot_interruption, pool_name)
        live: dict[str, costs.UsageSpan] = {}
        for pod in pods:
            on_node = (pod.get("spec") or {}).get("nodeName")
            key = experiment_of(pod)
            if not on_node or on_node not in pool_of_node or key is None:
                continue
            since, until = usage_times(pod, now)
            if since is not None:
                span = costs.UsageSpan(key, pool_of_node[on_node], pod_gpus(pod), since, until)
                live[pod["metadata"]["uid"]] = span
        usage = list(live.values())
        for uid, span in self.usage.items():
            if uid not in live:  # the pod is gone: it ran until now at the latest
                usage.append(
                    costs.UsageSpan(span.experiment, span.pool, span.gpus, span.start, now)
                    if span.end is None
                    else span
                )
        self.usage = live
        waiting: dict[str, dict[costs.ExperimentKey, int]] = {}
        for pod in pods:
            pool_label = (pod["metadata"].get("labels") or {}).get(LABEL_POOL)
            key = experiment_of(pod)
            bound = (pod.get("spec") or {}).get("nodeName")
            if pool_label and key and not bound and not terminal(pod):
                by_pool = waiting.setdefault(pool_label, {})
                by_pool[key] = by_pool.get(key, 0) + max(pod_gpus(pod), 1)
        floors = {p.name: p.minNodes for p in pools.values()}
        if self.last_tick is None:
            # What the cluster still shows of the time before this operator started.
            self.first_sight = (now, spans, usage, floors)
        elif now > self.last_tick:
            self.ledger.advance(self.last_tick, now, spans, usage, waiting, floors)
        self.last_tick = now
        self.prices = prices

    def trial_price(self, pools: Mapping[str, NodePool], spec: ExperimentSpec) -> float:
        """USD per hour that one trial of `spec` costs on its pool now (every pod of a
        distributed trial's gang: spec.workers of them)."""
        if spec.capacity is None or spec.capacity.nodePool not in pools:
            return 0.0
        pool = pools[spec.capacity.nodePool]
        prices = self.prices.get(pool.name, {})
        node = costs.expected_node_price(pool, prices) or 0.0
        per_pod = costs.trial_usd_per_hour(node, pool.gpusPerNode, trial_gpus(spec))
        return per_pod * spec.workers

    def cost_of(self, key: costs.ExperimentKey, controller: CostTarget) -> float:
        """The stored cost when this operator first saw the experiment, plus what it has
        accounted since it started (the ledger counts from the operator's start), plus,
        for a cost stored by an earlier operator, the time no operator was watching."""
        uid = (controller.body or {}).get("metadata", {}).get("uid")
        if self.bases.get(key, (None, 0.0))[0] != uid:
            if key in self.bases:  # deleted and created again under the same name
                self.ledger.experiments.pop(key, None)
            stored = float(controller.cost_usd or 0.0)
            unseen = self._unseen_cost(key, controller.cost_at)
            self.bases[key] = (uid, stored + unseen)
        return self.bases[key][1] + self.ledger.experiments.get(key, 0.0)

    def _unseen_cost(self, key: costs.ExperimentKey, since: float | None) -> float:
        """The experiment's share of [since, this operator's first tick], from the Nodes
        and trial pods still there at that tick: a lower bound, as nodes that came and
        went and pods deleted meanwhile left no trace."""
        if since is None or self.first_sight is None or since >= self.first_sight[0]:
            return 0.0
        start, spans, usage, floors = self.first_sight
        ledger = costs.Ledger()
        ledger.advance(since, start, spans, usage, {}, floors)
        return ledger.experiments.get(key, 0.0)
