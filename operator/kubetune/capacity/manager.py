"""The capacity loop: node pools scaled, cost accounted, every tick (the shell).

Each tick (`--capacity-interval`, 15 s by default):

1. Re-read the node pools from the ConfigMap. A bad one is reported (a Warning Event
   on the ConfigMap naming every bad field) and the pools read before stay in force.
2. List the Nodes and the trial pods (one call each), and per pool node the other pods
   on it (DaemonSets' aside), which make a node busy just as trials do.
3. For each scalable pool that is not backing off after an AWS failure: read its group,
   ask `scaling.plan`, and carry the plan out. A node to remove is cordoned first
   (`spec.unschedulable` and the annotation `kubetune.dev/scale-down`), checked again
   for pods, then its instance is terminated with ShouldDecrementDesiredCapacity=True;
   if a pod got there in between, it is uncordoned and kept. AWS failures never escape:
   the pool backs off (doubling, up to 5 minutes), and the experiments on the pool get
   the condition `NodePoolReady=False` and a Warning Event saying what failed.
4. Account the window since the last tick (`cost.Ledger`), and hand each experiment's
   controller its cost so far and the price of one of its trials per hour: the
   controller writes `status.costUSD` and feeds the engine (`CostObserved`), whose
   budget decisions (`maxCostUSD`) stay pure and replayable.

Time the operator is down is not accounted (the nodes run on, no one measures); the
totals start again from each experiment's stored `status.costUSD`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubetune.capacity.accounting import CostBook
from kubetune.capacity.aws import Aws, Backoff, SpotPriceBook
from kubetune.capacity.demand import SETTLE_SECONDS, ExperimentKey, pool_ceilings
from kubetune.capacity.gangs import GangAdmission, attempt_key
from kubetune.capacity.kubeobjects import (
    CapacityMetrics,
    CoreApi,
    NoMetrics,
    observe,
    waits_for_node,
)
from kubetune.capacity.pools import (
    CONFIGMAP_KEY,
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    LABEL_POOL,
    NodePool,
    Placement,
    PoolConfigError,
    node_in_pool,
    parse_node_pools,
    placement,
    trial_gpus,
)
from kubetune.capacity.reporting import CapacityReporter
from kubetune.capacity.scaler import SCALE_DOWN_ANNOTATION as SCALE_DOWN_ANNOTATION
from kubetune.capacity.scaler import PoolRuntime, PoolScaler
from kubetune.names import LABEL_EXPERIMENT
from kubetune.placement import CostTarget
from kubetune.spec import ExperimentSpec

logger = logging.getLogger(__name__)


class CapacityManager:
    """The loop: the node pools' configuration, and each tick's order of work. Scaling
    (`scaler.PoolScaler`), cost (`accounting.CostBook`) and what is told
    (`reporting.CapacityReporter`) are its parts."""

    def __init__(
        self,
        core: CoreApi,
        controllers: Callable[[], Mapping[tuple[str, str], CostTarget]],
        aws: Aws | None = None,
        configmap: tuple[str, str] = (CONFIGMAP_NAMESPACE, CONFIGMAP_NAME),
        interval: float = 15.0,
        clock: Callable[[], float] = time.time,
        backoff_seconds: float = 5.0,
        metrics: CapacityMetrics | None = None,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        """`core`: a kubernetes CoreV1Api. `controllers`: the live experiment controllers
        by (namespace, name) (`placement.CostTarget`). `metrics`: where node pool sizes,
        spot reclaims and costs go (the operator's `observability.Observer`)."""
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.core = core
        self.controllers = controllers
        self.aws = aws
        self.configmap = configmap
        self.interval = interval
        self.clock = clock
        self.backoff_seconds = backoff_seconds
        self.pools: dict[str, NodePool] = {}
        self.config_text: str | None = None
        self.config_error: str | None = None
        self.runtime: dict[str, PoolRuntime] = {}
        self.book = CostBook(SpotPriceBook(aws) if aws is not None else None, self.metrics)
        self.gangs = GangAdmission()
        self.scaler = PoolScaler(core, aws, clock, self.book, self.gangs)
        self.reporter = CapacityReporter(core, clock, self.metrics)
        self.ticks = 0
        # Every experiment's spec and `slots_ahead` (None: not known): `demand.pool_ceilings`.
        self.demand: Callable[[], Mapping[ExperimentKey, tuple[ExperimentSpec, int | None]]] = dict
        self.first_tick_at: float | None = None
        self.settle_seconds = settle_seconds

    # ----- configuration ------------------------------------------------------------

    def load(self) -> None:
        """Read the pools now (synchronously): the operator does so before it starts."""
        self._apply_config(self._read_config())

    def _read_config(self) -> tuple[str | None, dict[str, Any] | None]:
        from kubernetes.client.rest import ApiException

        namespace, name = self.configmap
        try:
            found = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None, None
            raise
        body = json.loads(found.data)
        return (body.get("data") or {}).get(CONFIGMAP_KEY, ""), body

    def _apply_config(self, read: tuple[str | None, dict[str, Any] | None]) -> str | None:
        """Use a new configuration; the problem (to report) when it is invalid."""
        text, _ = read
        if text == self.config_text:
            return None
        self.config_text = text
        if text is None:
            self.pools, self.config_error = {}, None
            self.scaler.groups.clear()
            return None
        namespace, name = self.configmap
        try:
            config = parse_node_pools(text, f"ConfigMap {namespace}/{name} key {CONFIGMAP_KEY}")
        except PoolConfigError as error:
            self.config_error = error.summary()
            logger.warning("%s (the node pools read before stay in force)", error)
            return self.config_error
        self.pools, self.config_error = config.by_name(), None
        self.scaler.groups.clear()
        for runtime in self.runtime.values():
            runtime.tags_written = False
        logger.info("node pools: %s", ", ".join(sorted(self.pools)) or "none")
        return None

    async def reload(self) -> None:
        read = await asyncio.to_thread(self._read_config)
        problem = self._apply_config(read)
        if problem is not None and read[1] is not None:
            await self.reporter.event(
                read[1], "ConfigMap", "InvalidNodePools", problem, warning=True, key="config"
            )

    def placement_for(self, spec: ExperimentSpec) -> Placement | None:
        """Where the experiment's trial pods go (None: no pool named, or an unknown one)."""
        if spec.capacity is None:
            return None
        pool = self.pools.get(spec.capacity.nodePool)
        if pool is None:
            # Unknown now (the configuration changed under a running experiment): its pods
            # still carry the pool label, and wait until the pool is back.
            return Placement(spec.capacity.nodePool, {LABEL_POOL: spec.capacity.nodePool})
        return placement(pool)

    def check(self, spec: ExperimentSpec) -> str | None:
        """Why the experiment cannot run here (an unknown pool), or None."""
        if spec.capacity is None or spec.capacity.nodePool in self.pools:
            return None
        known = ", ".join(sorted(self.pools)) or "none configured"
        namespace, name = self.configmap
        return (
            f"no node pool named {spec.capacity.nodePool!r} in ConfigMap {namespace}/{name} "
            f"(known: {known})"
        )

    def check_workers(self, spec: ExperimentSpec) -> str | None:
        """Why the experiment's gang can never be placed on its pool (spec.workers pods
        asking more GPUs than the pool can ever have), or None."""
        pool = self.pools.get(spec.capacity.nodePool) if spec.capacity is not None else None
        if pool is None or spec.workers == 1 or not pool.scalable:
            return None  # a pool of provider `none`: its Nodes may change; the gate waits
        asked = max(trial_gpus(spec), 1) * spec.workers
        capacity = pool.maxNodes * pool.gpusPerNode
        if asked <= capacity:
            return None
        return (
            f"{spec.workers} pods asking {asked} GPUs in all can never be placed together "
            f"on node pool {pool.name} (maxNodes {pool.maxNodes} x gpusPerNode "
            f"{pool.gpusPerNode} = {capacity})"
        )

    def admit_gang(
        self, spec: ExperimentSpec, namespace: str, trial: str, attempt: int
    ) -> str | None:
        """Why the attempt's gang (spec.workers > 1) waits whole for room on its pool
        (capacity/gangs.py), or None: create its pods (counted from now on)."""
        if spec.workers == 1 or spec.capacity is None:
            return None
        pool = spec.capacity.nodePool
        asked = max(trial_gpus(spec), 1) * spec.workers
        key = (namespace, trial, str(attempt))
        why = self.gangs.admit(pool, key, asked, self.clock(), pods=spec.workers)
        return None if why is None else f"node pool {pool}: {why}"

    # ----- the loop -------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop survives anything: next tick tries again
                logger.exception("capacity tick failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        self.ticks += 1
        try:
            await self.reload()
        except Exception as error:  # keep the pools read before
            logger.warning("could not read the node pool ConfigMap: %s", error)
        now = self.clock()
        nodes = await self.scaler.list_objects(self.core.list_node)
        pods = await self.scaler.list_objects(
            self.core.list_pod_for_all_namespaces, label_selector=LABEL_EXPERIMENT
        )
        listed = {attempt_key(p) for p in pods}
        if self.first_tick_at is None:
            self.first_tick_at = now
        running_for = now - self.first_tick_at
        owners = [
            (
                labels.get(LABEL_POOL, ""),
                (p["metadata"].get("namespace", ""), labels[LABEL_EXPERIMENT]),
            )
            for p in pods
            if LABEL_EXPERIMENT in (labels := p["metadata"].get("labels") or {})
        ]
        ceilings = pool_ceilings(
            self.pools, self.demand(), owners, running_for, self.settle_seconds
        )
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for pool in self.pools.values():
            runtime = self.runtime.setdefault(
                pool.name, PoolRuntime(backoff=Backoff(base=self.backoff_seconds))
            )
            pool_nodes = [n for n in nodes if node_in_pool(pool, n["metadata"].get("labels") or {})]
            by_pool[pool.name] = pool_nodes
            observed = await self.scaler.observe_nodes(pool_nodes)
            pending = [
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(LABEL_POOL) == pool.name
                and waits_for_node(p)
            ]
            runtime.current = len(pool_nodes)
            if pool.scalable and self.aws is not None:
                if runtime.backoff.ready(now):
                    admitted = self.gangs.unlisted(pool.name, listed)
                    ceiling = ceilings.get(pool.name)
                    await self.scaler.scale(
                        pool, runtime, observed, pending, admitted, now, ceiling
                    )
            else:
                runtime.desired = len(pool_nodes)
            observe(
                self.metrics.observe_node_pool,
                pool.name,
                runtime.desired,
                runtime.current,
                maximum=pool.maxNodes,
                pending_pods=len(pending),
            )
        self.gangs.observed(self.pools, by_pool, pods, now)
        await self.book.account(self.pools, now, nodes, pods)
        await self.reporter.report(self.controllers(), self.pools, self.runtime, self.book)
