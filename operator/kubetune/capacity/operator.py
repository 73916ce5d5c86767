"""The capacity loop inside `kubetune operator`: its flags, and a kopf startup handler.

Importing this module registers the startup handler; `kubetune.operator.main` calls
`add_arguments`, then `build` (which reads the node pools once, before kopf starts, so
that the first experiments already find their pool) and `attach` (the registry's live
controllers, which the loop hands costs and conditions to).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from kubetune.capacity.aws import Aws
from kubetune.capacity.demand import SETTLE_SECONDS
from kubetune.capacity.kubeobjects import CapacityMetrics
from kubetune.capacity.manager import CapacityManager
from kubetune.capacity.pools import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from kubetune.placement import CostTarget
from kubetune.spec import ExperimentSpec

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("node pools and cost")
    group.add_argument(
        "--node-pools-configmap",
        default=f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}",
        help="NAMESPACE/NAME of the ConfigMap whose key pools.yaml lists the node pools",
    )
    group.add_argument(
        "--capacity-interval",
        type=float,
        default=float(os.environ.get("KUBETUNE_CAPACITY_INTERVAL", "15")),
        help="seconds between scaling and cost ticks (default 15; $KUBETUNE_CAPACITY_INTERVAL)",
    )
    group.add_argument(
        "--capacity-settle-seconds",
        type=float,
        default=float(os.environ.get("KUBETUNE_CAPACITY_SETTLE_SECONDS", SETTLE_SECONDS)),
        help=(
            "after a start, seconds before idle nodes that no known experiment can use go "
            "without the pool's grace period (default 60; $KUBETUNE_CAPACITY_SETTLE_SECONDS)"
        ),
    )
    group.add_argument(
        "--aws-endpoint-url",
        default=None,
        help="AWS endpoint override, e.g. a moto server (boto3 also reads $AWS_ENDPOINT_URL)",
    )
    group.add_argument(
        "--aws-backoff-seconds",
        type=float,
        default=float(os.environ.get("KUBETUNE_AWS_BACKOFF_SECONDS", "5")),
        help="first pause of a pool after an AWS failure, doubling up to 5 minutes",
    )
    group.add_argument(
        "--aws-calls-per-second",
        type=float,
        default=5.0,
        help="rate limit of the operator's AWS API calls, all pools together",
    )


class LiveTarget(CostTarget, Protocol):
    """An experiment's controller as the loop sees it: loaded (rebuilt) or not yet."""

    loaded: bool

    def slots_ahead(self) -> int | None: ...


class Controllers(Protocol):
    """The operator's registry (`handlers.Registry`), as the loop reads it."""

    @property
    def controllers(self) -> Mapping[tuple[str, str], LiveTarget]: ...


def build(
    args: argparse.Namespace, api: Any, metrics: CapacityMetrics | None = None
) -> CapacityManager:
    """The capacity manager, with the node pools read once; its measures go to
    `metrics` (the operator's `observability.Observer`)."""
    from kubernetes import client

    namespace, _, name = args.node_pools_configmap.partition("/")
    if not name:
        raise SystemExit("--node-pools-configmap: expected NAMESPACE/NAME")
    aws = Aws(endpoint_url=args.aws_endpoint_url, rate=args.aws_calls_per_second)
    manager = CapacityManager(
        client.CoreV1Api(api),
        dict,
        aws,
        configmap=(namespace, name),
        interval=args.capacity_interval,
        backoff_seconds=args.aws_backoff_seconds,
        metrics=metrics,
        settle_seconds=args.capacity_settle_seconds,
    )
    try:
        manager.load()
    except Exception as error:  # the loop reads it again every tick
        logger.warning("could not read the node pools yet: %s", error)
    return manager


def attach(manager: CapacityManager, registry: Controllers) -> None:
    """The loop reads the registry's controllers, by (namespace, name), every tick: the
    loaded ones for costs and conditions, all of them for what their trials can use."""

    def controllers() -> Mapping[tuple[str, str], CostTarget]:
        return {k: c for k, c in registry.controllers.items() if c.loaded}

    def demand() -> dict[tuple[str, str], tuple[ExperimentSpec, int | None]]:
        return {key: (c.spec, c.slots_ahead()) for key, c in registry.controllers.items()}

    manager.controllers = controllers
    manager.demand = demand


@kopf.on.startup()
async def _start_capacity(memo: kopf.Memo, **_: Any) -> None:
    manager = memo.get("capacity")  # put in kopf's memo by kubetune.operator.main
    if isinstance(manager, CapacityManager):
        asyncio.get_running_loop().create_task(manager.run_forever())
        logger.info("capacity loop started (every %ss)", manager.interval)
