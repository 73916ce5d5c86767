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
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.capacity import cost as costs
from kubetune.capacity.aws import Aws, AwsError, Backoff, Group, SpotPriceBook, group_for
from kubetune.capacity.pools import (
    CONFIGMAP_KEY,
    CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
    GPU_RESOURCE,
    LABEL_POOL,
    CapacityType,
    NodePool,
    Placement,
    PoolConfigError,
    node_in_pool,
    node_template_tags,
    parse_node_pools,
    placement,
    pod_gpus,
    trial_gpus,
)
from kubetune.capacity.scaling import GroupState, PendingPod, Plan, PoolNode, plan
from kubetune.names import LABEL_EXPERIMENT
from kubetune.placement import CostTarget
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import parse_rfc3339, rfc3339

logger = logging.getLogger(__name__)

SCALE_DOWN_ANNOTATION = "kubetune.dev/scale-down"
CONDITION = "NodePoolReady"
EVENT_REPEAT_SECONDS = 300.0

try:  # the metrics of kubetune.observability, when that part is installed
    from kubetune import observability as _observability
except ImportError:  # pragma: no cover
    _observability = None  # type: ignore[assignment]


def _observe(name: str, *args: Any, **kwargs: Any) -> None:
    function = getattr(_observability, name, None)
    if function is None:
        return
    try:
        function(*args, **kwargs)
    except Exception:  # metrics never stop the loop
        logger.debug("observability.%s failed", name, exc_info=True)


def instance_id(node: Mapping[str, Any]) -> str | None:
    """The EC2 instance behind a Node: `spec.providerID` is `aws:///us-east-1a/i-0abc`."""
    provider = (node.get("spec") or {}).get("providerID") or ""
    last = provider.rsplit("/", 1)[-1]
    return last if provider.startswith("aws://") and last.startswith("i-") else None


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _daemon(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    if "kubernetes.io/config.mirror" in (metadata.get("annotations") or {}):
        return True
    return any(ref.get("kind") == "DaemonSet" for ref in metadata.get("ownerReferences") or [])


def _experiment_of(pod: Mapping[str, Any]) -> costs.ExperimentKey | None:
    metadata = pod.get("metadata") or {}
    name = (metadata.get("labels") or {}).get(LABEL_EXPERIMENT)
    return (metadata.get("namespace", ""), name) if name else None


def _usage_times(pod: Mapping[str, Any], now: float) -> tuple[float | None, float | None]:
    """When the trial container ran: started, and finished (None while it runs)."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "running" in state:
            return parse_rfc3339(state["running"].get("startedAt")), None
        if "terminated" in state:
            ended = state["terminated"]
            finished = parse_rfc3339(ended.get("finishedAt")) or now
            return parse_rfc3339(ended.get("startedAt")), finished
    if status.get("phase") == "Running":
        return parse_rfc3339(status.get("startTime")), None
    return None, None


@dataclass
class PoolRuntime:
    """What the loop remembers about one pool between ticks."""

    idle_since: dict[str, float] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    error: str | None = None
    error_since: float = 0.0
    ok_since: float = 0.0
    tags_written: bool = False
    desired: int = 0
    current: int = 0


class CapacityManager:
    def __init__(
        self,
        core: Any,
        controllers: Callable[[], Mapping[tuple[str, str], CostTarget]],
        aws: Aws | None = None,
        configmap: tuple[str, str] = (CONFIGMAP_NAMESPACE, CONFIGMAP_NAME),
        interval: float = 15.0,
        clock: Callable[[], float] = time.time,
        backoff_seconds: float = 5.0,
    ) -> None:
        """`core`: a kubernetes CoreV1Api. `controllers`: the live experiment controllers
        by (namespace, name); each has `cost_usd`, `spec`, `body` and `capacity_update`."""
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
        self.groups: dict[str, Group] = {}
        self.spot = SpotPriceBook(aws) if aws is not None else None
        self.ledger = costs.Ledger()
        self.nodes: dict[str, tuple[str, float, float]] = {}  # name -> (pool, start, $/h)
        self.usage: dict[str, costs.UsageSpan] = {}  # pod uid -> span
        self.last_tick: float | None = None
        self.events_sent: dict[tuple[str, str, str], float] = {}
        self.bases: dict[costs.ExperimentKey, tuple[str | None, float]] = {}
        self.terminated: set[str] = set()  # nodes whose instance the operator terminated
        self.prices: dict[str, dict[tuple[str, str], float]] = {}
        self.ticks = 0
        self.first_sight: (
            tuple[float, list[costs.NodeSpan], list[costs.UsageSpan], dict[str, int]] | None
        ) = None

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
        import json

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
            self.groups.clear()
            return None
        namespace, name = self.configmap
        try:
            config = parse_node_pools(text, f"ConfigMap {namespace}/{name} key {CONFIGMAP_KEY}")
        except PoolConfigError as error:
            self.config_error = error.summary()
            logger.warning("%s (the node pools read before stay in force)", error)
            return self.config_error
        self.pools, self.config_error = config.by_name(), None
        self.groups.clear()
        for runtime in self.runtime.values():
            runtime.tags_written = False
        logger.info("node pools: %s", ", ".join(sorted(self.pools)) or "none")
        return None

    async def reload(self) -> None:
        read = await asyncio.to_thread(self._read_config)
        problem = self._apply_config(read)
        if problem is not None and read[1] is not None:
            await self._event(
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
        nodes = await self._list("list_node")
        pods = await self._list("list_pod_for_all_namespaces", label_selector=LABEL_EXPERIMENT)
        for pool in self.pools.values():
            runtime = self.runtime.setdefault(
                pool.name, PoolRuntime(backoff=Backoff(base=self.backoff_seconds))
            )
            pool_nodes = [n for n in nodes if node_in_pool(pool, n["metadata"].get("labels") or {})]
            observed = await self._observe_nodes(pool_nodes)
            pending = [
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(LABEL_POOL) == pool.name
                and not (p.get("spec") or {}).get("nodeName")
                and not _terminal(p)
                and not p["metadata"].get("deletionTimestamp")
            ]
            runtime.current = len(pool_nodes)
            if pool.scalable and self.aws is not None:
                if runtime.backoff.ready(now):
                    await self._scale(pool, runtime, observed, pending, now)
            else:
                runtime.desired = len(pool_nodes)
            _observe(
                "observe_node_pool",
                pool.name,
                runtime.desired,
                runtime.current,
                maximum=pool.maxNodes,
                pending_pods=len(pending),
            )
        await self._account(now, nodes, pods)
        await self._report()

    async def _list(self, method: str, **kwargs: Any) -> list[dict[str, Any]]:
        import json

        found = await asyncio.to_thread(
            getattr(self.core, method), _preload_content=False, **kwargs
        )
        return json.loads(found.data).get("items", [])

    async def _pods_on(self, node: str) -> list[dict[str, Any]]:
        """The pods bound to `node` that still run or may run (DaemonSets' aside)."""
        found = await self._list(
            "list_pod_for_all_namespaces",
            field_selector=f"spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed",
        )
        return [p for p in found if not _daemon(p)]

    async def _observe_nodes(self, nodes: list[dict[str, Any]]) -> list[PoolNode]:
        observed = []
        for node in nodes:
            name = node["metadata"]["name"]
            # Every pod bound there counts, trials or not (DaemonSets' aside).
            running = await self._pods_on(name)
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            conditions = (node.get("status") or {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            annotations = node["metadata"].get("annotations") or {}
            observed.append(
                PoolNode(
                    name=name,
                    instance_id=instance_id(node),
                    gpus=int(str(allocatable.get(GPU_RESOURCE, "0")) or 0),
                    used_gpus=sum(pod_gpus(p) for p in running),
                    busy=bool(running),
                    ready=ready,
                    unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
                    cordoned_by_us=SCALE_DOWN_ANNOTATION in annotations,
                )
            )
        return observed

    # ----- scaling --------------------------------------------------------------------

    async def _scale(
        self,
        pool: NodePool,
        runtime: PoolRuntime,
        nodes: list[PoolNode],
        pending: list[dict[str, Any]],
        now: float,
    ) -> None:
        assert self.aws is not None
        group = self.groups.get(pool.name)
        if group is None:
            group = group_for(self.aws, pool)
            if group is None:
                return
            self.groups[pool.name] = group
        waiting = [
            PendingPod(p["metadata"]["namespace"], p["metadata"]["name"], max(pod_gpus(p), 1))
            for p in pending
        ]
        try:
            state = await group.state([n.instance_id for n in nodes if n.instance_id])
            decided = plan(pool, state, nodes, waiting, now, runtime.idle_since)
            runtime.idle_since = dict(decided.idle_since)
            await self._carry_out(pool, group, state, decided, nodes)
            if not runtime.tags_written and getattr(pool.provider, "writeNodeTemplateTags", False):
                await group.ensure_tags(node_template_tags(pool))
                runtime.tags_written = True
        except AwsError as error:
            delay = runtime.backoff.failed(now)
            message = f"node pool {pool.name}: {error} (next try in {delay:.0f}s)"
            logger.warning("%s", message)
            if runtime.error is None:
                runtime.error_since = now
            runtime.error = message
            return
        runtime.backoff.succeeded()
        if runtime.error is not None:
            runtime.ok_since = now
            logger.info("node pool %s: AWS answers again", pool.name)
        runtime.error = None

    async def _carry_out(
        self,
        pool: NodePool,
        group: Group,
        state: GroupState,
        decided: Plan,
        nodes: list[PoolNode],
    ) -> None:
        runtime = self.runtime[pool.name]
        runtime.desired = state.desired
        if decided.reason:
            logger.info("node pool %s: %s", pool.name, decided.reason)
        for name in decided.uncordon:
            await self._cordon(name, False)
        if decided.desired is not None and decided.desired > state.desired:
            await group.set_desired(decided.desired)
            runtime.desired = decided.desired
            return
        if not state.can_remove_specific:
            names = [r.node for r in decided.remove if r.node]
            if (
                decided.desired is not None
                and decided.remove
                and await self._cordon_all_empty(names)
            ):
                await group.set_desired(decided.desired)
                runtime.desired = decided.desired
            return
        if decided.desired is not None:  # launches no longer needed
            await group.set_desired(decided.desired)
            runtime.desired = decided.desired
        for removal in decided.remove:
            if removal.node is not None and not await self._cordon_all_empty([removal.node]):
                continue
            await group.terminate(removal.instance_id)
            if removal.node is not None:
                self.terminated.add(removal.node)
            runtime.desired = max(runtime.desired - 1, 0)
            logger.info(
                "node pool %s: terminated %s (node %s, empty)",
                pool.name,
                removal.instance_id,
                removal.node,
            )

    async def _cordon_all_empty(self, names: Iterable[str]) -> bool:
        """Cordon the nodes, then check again that nothing runs on them; if something
        does, uncordon them all and say no."""
        names = list(names)
        for name in names:
            await self._cordon(name, True)
        for name in names:
            if await self._pods_on(name):
                for other in names:
                    await self._cordon(other, False)
                return False
        return True

    async def _cordon(self, name: str, on: bool) -> None:
        from kubernetes.client.rest import ApiException

        body = {
            "metadata": {
                "annotations": {SCALE_DOWN_ANNOTATION: rfc3339(self.clock()) if on else None}
            },
            "spec": {"unschedulable": True if on else None},
        }
        try:
            await asyncio.to_thread(self.core.patch_node, name, body)
        except ApiException as error:
            if error.status != 404:
                raise

    # ----- cost -----------------------------------------------------------------------

    async def _account(
        self, now: float, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]
    ) -> None:
        prices: dict[str, dict[tuple[str, str], float]] = {}
        for pool in self.pools.values():
            if pool.region and self.spot is not None and pool.capacityType is CapacityType.SPOT:
                try:
                    await self.spot.refresh(pool.region, pool.instanceTypes)
                except AwsError as error:
                    logger.warning("node pool %s: spot prices: %s", pool.name, error)
            prices[pool.name] = self.spot.for_region(pool.region) if self.spot else {}
        seen: set[str] = set()
        spans: list[costs.NodeSpan] = []
        pool_of_node: dict[str, str] = {}
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            home = next((p for p in self.pools.values() if node_in_pool(p, labels)), None)
            if home is None:
                continue
            name = node["metadata"]["name"]
            seen.add(name)
            pool_of_node[name] = home.name
            price = costs.node_price(home, labels, prices[home.name]) or 0.0
            start = parse_rfc3339(node["metadata"].get("creationTimestamp")) or now
            self.nodes[name] = (home.name, start, price)
        for name, (pool_name, start, price) in list(self.nodes.items()):
            end = None if name in seen else now
            spans.append(costs.NodeSpan(name, pool_name, start, end, price))
            if end is not None:
                del self.nodes[name]  # accounted up to now, this once more
                if name in self.terminated:
                    self.terminated.discard(name)
                elif pool_name in self.pools and self.pools[pool_name].capacityType is (
                    CapacityType.SPOT
                ):
                    # Gone without the operator removing it: a spot reclaim (or a person).
                    logger.info("node pool %s: node %s is gone (spot reclaim?)", pool_name, name)
                    _observe("observe_spot_interruption", pool_name)
        live: dict[str, costs.UsageSpan] = {}
        for pod in pods:
            on_node = (pod.get("spec") or {}).get("nodeName")
            key = _experiment_of(pod)
            if not on_node or on_node not in pool_of_node or key is None:
                continue
            since, until = _usage_times(pod, now)
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
            key = _experiment_of(pod)
            bound = (pod.get("spec") or {}).get("nodeName")
            if pool_label and key and not bound and not _terminal(pod):
                by_pool = waiting.setdefault(pool_label, {})
                by_pool[key] = by_pool.get(key, 0) + max(pod_gpus(pod), 1)
        floors = {p.name: p.minNodes for p in self.pools.values()}
        if self.last_tick is None:
            # What the cluster still shows of the time before this operator started.
            self.first_sight = (now, spans, usage, floors)
        elif now > self.last_tick:
            self.ledger.advance(self.last_tick, now, spans, usage, waiting, floors)
        self.last_tick = now
        self.prices = prices

    def trial_price(self, spec: ExperimentSpec) -> float:
        """USD per hour that one trial of `spec` costs on its pool now."""
        if spec.capacity is None or spec.capacity.nodePool not in self.pools:
            return 0.0
        pool = self.pools[spec.capacity.nodePool]
        prices = self.prices.get(pool.name, {})
        node = costs.expected_node_price(pool, prices) or 0.0
        return costs.trial_usd_per_hour(node, pool.gpusPerNode, trial_gpus(spec))

    def cost_of(self, key: costs.ExperimentKey, controller: Any) -> float:
        """The stored cost when this operator first saw the experiment, plus what it has
        accounted since it started (the ledger counts from the operator's start), plus,
        for a cost stored by an earlier operator, the time no operator was watching."""
        uid = (getattr(controller, "body", None) or {}).get("metadata", {}).get("uid")
        if self.bases.get(key, (None, 0.0))[0] != uid:
            if key in self.bases:  # deleted and created again under the same name
                self.ledger.experiments.pop(key, None)
            stored = float(getattr(controller, "cost_usd", None) or 0.0)
            unseen = self._unseen_cost(key, getattr(controller, "cost_at", None))
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

    async def _report(self) -> None:
        """Hand each experiment its cost and its pool's condition; post failures."""
        now = self.clock()
        for key, controller in list(self.controllers().items()):
            spec = controller.spec
            pool = spec.capacity.nodePool if spec.capacity else None
            if key not in self.ledger.experiments and pool is None:
                continue
            usd = round(self.cost_of(key, controller), 6)
            condition = self._condition(pool, now) if pool else None
            runtime = self.runtime.get(pool or "")
            if runtime is not None and runtime.error is not None:
                await self._event(
                    controller.body,
                    "HPOExperiment",
                    "NodePoolScalingFailed",
                    runtime.error,
                    warning=True,
                    key=runtime.error.split(" (next try")[0],
                )
            _observe("observe_cost", key[0], key[1], usd)
            try:
                price = self.trial_price(spec)
                await controller.capacity_update(usd, price, condition, self.last_tick)
            except Exception:
                logger.exception("could not update the cost of %s/%s", *key)

    def _condition(self, pool: str, now: float) -> dict[str, Any]:
        runtime = self.runtime.get(pool)
        if pool not in self.pools:
            status, reason = "False", "UnknownNodePool"
            message, since = f"no node pool named {pool!r}", now
        elif runtime is not None and runtime.error is not None:
            status, reason, message, since = (
                "False",
                "ScalingFailed",
                runtime.error,
                runtime.error_since,
            )
        else:
            status, reason = "True", "NodePoolReady"
            spec = self.pools[pool]
            desired = runtime.desired if runtime else 0
            current = runtime.current if runtime else 0
            message = f"node pool {pool}: {current} nodes, {desired} desired (max {spec.maxNodes})"
            since = runtime.ok_since if runtime else now
        return {
            "type": CONDITION,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": rfc3339(since or now),
        }

    async def _event(
        self,
        involved: dict[str, Any],
        kind: str,
        reason: str,
        message: str,
        warning: bool,
        key: str,
    ) -> None:
        """An Event, not repeated for the same object and cause within EVENT_REPEAT_SECONDS."""
        from kubetune.kubeevents import event_body  # the Kubernetes client, only when used

        metadata = involved["metadata"]
        ident = (f"{metadata.get('namespace')}/{metadata['name']}", reason, key)
        now = self.clock()
        if now - self.events_sent.get(ident, -1e18) < EVENT_REPEAT_SECONDS:
            return
        self.events_sent[ident] = now
        event = event_body({"apiVersion": "v1", **involved}, kind, reason, message, warning)
        try:
            await asyncio.to_thread(self.core.create_namespaced_event, metadata["namespace"], event)
        except Exception as error:
            logger.warning("could not post event %s: %s", reason, error)
