"""Scaling node pools: read a pool's group, plan (`scaling.plan`), carry the plan out.

A node to remove is cordoned first (`spec.unschedulable` and the annotation
`kubetune.dev/scale-down`), checked again for pods, then its instance is terminated;
if a pod got there in between, or a trial pod or gang that the plan did not know of
now waits for a node (the scheduler, its cache behind the cordon, may bind it there
in the next instant), it is uncordoned and kept; the next tick plans with it. AWS
failures back the pool off (doubling, up to 5 minutes) and are remembered in its
`PoolRuntime`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubetune.capacity.accounting import CostBook
from kubetune.capacity.aws import Aws, AwsError, Backoff, Group, group_for
from kubetune.capacity.gangs import AttemptKey, GangAdmission, attempt_key
from kubetune.capacity.kubeobjects import (
    CoreApi,
    daemon,
    ended_pod,
    instance_id,
    waits_for_node,
)
from kubetune.capacity.pools import (
    GPU_RESOURCE,
    LABEL_POOL,
    AsgProvider,
    NodePool,
    node_template_tags,
    pod_gpus,
)
from kubetune.capacity.scaling import GroupState, PendingPod, Plan, PoolNode, plan
from kubetune.leanobjects import lean
from kubetune.reclaim import notice_taint
from kubetune.timestamps import rfc3339

logger = logging.getLogger(__name__)

SCALE_DOWN_ANNOTATION = "kubetune.dev/scale-down"
# Nodes or pods per LIST response: a tick lists every trial pod, ended ones too. A page
# is held whole, as bytes and as parsed objects, until it is cut down: 500 full trial
# pods took about 20 MB at once, 250 about 12 (fewer calls do not lower the API
# server's work: it reads the same objects page by page).
OBJECTS_PER_PAGE = 250


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


class PoolScaler:
    def __init__(
        self,
        core: CoreApi,
        aws: Aws | None,
        clock: Callable[[], float],
        book: CostBook,
        gangs: GangAdmission,
    ) -> None:
        """`core`: a kubernetes CoreV1Api; `book` learns which nodes it terminated;
        `gangs` tells which gangs were admitted and have no pods yet."""
        self.core = core
        self.gangs = gangs
        self.aws = aws
        self.clock = clock
        self.book = book
        self.groups: dict[str, Group] = {}

    async def list_objects(
        self, list_call: Callable[..., Any], **kwargs: Any
    ) -> list[dict[str, Any]]:
        """The items `list_call` (a list method of `core`) answers, as JSON objects with
        what is never read left out (`lean`; an ended pod: `ended_pod`), a page at a
        time."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            more = {"_continue": token} if token else {}
            found = await asyncio.to_thread(
                list_call, _preload_content=False, limit=OBJECTS_PER_PAGE, **more, **kwargs
            )
            page = json.loads(found.data)
            for item in page.get("items") or []:
                try:
                    kept = ended_pod(item)
                except Exception:  # malformed: kept whole, read (or refused) as before
                    kept = item
                items.append(lean(item) if kept is item else kept)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    async def pods_on(self, node: str) -> list[dict[str, Any]]:
        """The pods bound to `node` that still run or may run (DaemonSets' aside)."""
        found = await self.list_objects(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed",
        )
        return [p for p in found if not daemon(p)]

    async def observe_nodes(self, nodes: list[dict[str, Any]]) -> list[PoolNode]:
        observed = []
        for node in nodes:
            name = node["metadata"]["name"]
            # Every pod bound there counts, trials or not (DaemonSets' aside).
            running = await self.pods_on(name)
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
                    # A Node being reclaimed takes no new pod (its termination taint).
                    unschedulable=bool((node.get("spec") or {}).get("unschedulable"))
                    or notice_taint(node) is not None,
                    reclaiming=notice_taint(node) is not None,
                    cordoned_by_us=SCALE_DOWN_ANNOTATION in annotations,
                )
            )
        return observed

    async def scale(
        self,
        pool: NodePool,
        runtime: PoolRuntime,
        nodes: list[PoolNode],
        pending: list[dict[str, Any]],
        admitted: Mapping[AttemptKey, list[PendingPod]],
        now: float,
        demand_ceiling: int | None = None,
    ) -> None:
        """Plan for the pool's `nodes`, its trial pods waiting for a node (`pending`),
        the pods of gangs admitted but not created yet (`admitted`) and the most nodes
        its experiments can still use (`demand_ceiling`), and carry the plan out."""
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
        waiting += [pod for pods in admitted.values() for pod in pods]
        known = {attempt_key(p) for p in pending} | set(admitted)
        try:
            state = await group.state([n.instance_id for n in nodes if n.instance_id])
            decided = plan(
                pool, state, nodes, waiting, now, runtime.idle_since, demand_ceiling=demand_ceiling
            )
            runtime.idle_since = dict(decided.idle_since)
            await self._carry_out(pool, runtime, group, state, decided, known)
            provider = pool.provider  # only an ASG's node template takes tags
            if (
                not runtime.tags_written
                and isinstance(provider, AsgProvider)
                and provider.writeNodeTemplateTags
            ):
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
        runtime: PoolRuntime,
        group: Group,
        state: GroupState,
        decided: Plan,
        known: set[AttemptKey],
    ) -> None:
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
                and await self._cordon_all_empty(names, pool.name, known)
            ):
                await group.set_desired(decided.desired)
                runtime.desired = decided.desired
            return
        if decided.desired is not None:  # launches no longer needed
            await group.set_desired(decided.desired)
            runtime.desired = decided.desired
        for removal in decided.remove:
            if removal.node is not None and not await self._cordon_all_empty(
                [removal.node], pool.name, known
            ):
                continue
            await group.terminate(removal.instance_id)
            if removal.node is not None:
                self.book.terminated.add(removal.node)
            runtime.desired = max(runtime.desired - 1, 0)
            logger.info(
                "node pool %s: terminated %s (node %s, empty)",
                pool.name,
                removal.instance_id,
                removal.node,
            )

    async def _cordon_all_empty(
        self, names: Iterable[str], pool: str, known: set[AttemptKey]
    ) -> bool:
        """Cordon the nodes, then check again that nothing runs on them and that no
        attempt the plan did not know of (`known`) waits for a node of the pool; if
        either, uncordon them all and say no."""
        names = list(names)
        for name in names:
            await self._cordon(name, True)
        kept = False
        for name in names:
            if await self.pods_on(name):
                kept = True
                break
        if kept or await self._waiting_now(pool) - known:
            for other in names:
                await self._cordon(other, False)
            return False
        return True

    async def _waiting_now(self, pool: str) -> set[AttemptKey]:
        """The attempts whose pods wait for a node of the pool now: pods no node has
        taken, and gangs admitted whose pods are not listed yet."""
        pods = await self.list_objects(
            self.core.list_pod_for_all_namespaces, label_selector=f"{LABEL_POOL}={pool}"
        )
        waiting = {attempt_key(p) for p in pods if waits_for_node(p)}
        return waiting | set(self.gangs.unlisted(pool, {attempt_key(p) for p in pods}))

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
