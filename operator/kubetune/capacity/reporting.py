"""What the capacity loop tells: each experiment's cost and NodePoolReady condition
(handed to its controller), and Kubernetes Events, each not repeated for the same
object and cause within EVENT_REPEAT_SECONDS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubetune.capacity.accounting import CostBook
from kubetune.capacity.kubeobjects import CapacityMetrics, CoreApi, NoMetrics, observe
from kubetune.capacity.pools import NodePool
from kubetune.capacity.scaler import PoolRuntime
from kubetune.placement import CostTarget
from kubetune.timestamps import rfc3339

logger = logging.getLogger(__name__)

CONDITION = "NodePoolReady"
EVENT_REPEAT_SECONDS = 300.0


class CapacityReporter:
    def __init__(
        self, core: CoreApi, clock: Callable[[], float], metrics: CapacityMetrics | None = None
    ) -> None:
        self.core = core
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.clock = clock
        self.events_sent: dict[tuple[str, str, str], float] = {}

    async def report(
        self,
        controllers: Mapping[tuple[str, str], CostTarget],
        pools: Mapping[str, NodePool],
        runtimes: Mapping[str, PoolRuntime],
        book: CostBook,
    ) -> None:
        """Hand each experiment its cost and its pool's condition; post failures."""
        now = self.clock()
        for key, controller in list(controllers.items()):
            spec = controller.spec
            pool = spec.capacity.nodePool if spec.capacity else None
            if key not in book.ledger.experiments and pool is None:
                continue
            usd = round(book.cost_of(key, controller), 6)
            condition = self.condition(pool, pools, runtimes, now) if pool else None
            runtime = runtimes.get(pool or "")
            if runtime is not None and runtime.error is not None:
                await self.event(
                    controller.body,
                    "HPOExperiment",
                    "NodePoolScalingFailed",
                    runtime.error,
                    warning=True,
                    key=runtime.error.split(" (next try")[0],
                )
            observe(self.metrics.observe_cost, key[0], key[1], usd)
            try:
                price = book.trial_price(pools, spec)
                await controller.capacity_update(usd, price, condition, book.last_tick)
            except Exception:
                logger.exception("could not update the cost of %s/%s", *key)

    def condition(
        self,
        pool: str,
        pools: Mapping[str, NodePool],
        runtimes: Mapping[str, PoolRuntime],
        now: float,
    ) -> dict[str, Any]:
        """The experiment's NodePoolReady condition: its pool known, scaling, and sized."""
        runtime = runtimes.get(pool)
        if pool not in pools:
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
            spec = pools[pool]
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

    async def event(
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
