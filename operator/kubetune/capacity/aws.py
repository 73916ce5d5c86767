"""The AWS side of node pools: boto3 behind a rate limiter, retries and back-off.

Every call goes through `Aws.call`, which

* waits for a token from a rate limiter (a token bucket shared by all pools: the
  Auto Scaling, EKS and EC2 APIs throttle per account and region);
* lets botocore retry transient errors and throttling (`retries={"mode": "standard"}`:
  exponential back-off with jitter, a retry quota);
* retries throttling once more itself, after a longer pause, since a throttled account
  stays throttled for a while; and
* turns every failure into an `AwsError` naming the operation, the error code and
  whether it was throttling, which the manager reports (an Event and a condition on the
  experiments of the pool) and answers with a per-pool back-off (`Backoff`).

The endpoint is boto3's: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_<SERVICE>`) reaches a
stand-in such as moto's server with the very same code, or pass `endpoint_url`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubetune.capacity.cost import SpotPrice, latest_spot_prices
from kubetune.capacity.pools import AsgProvider, EksNodegroupProvider, NodePool
from kubetune.capacity.scaling import GroupState, Instance

logger = logging.getLogger(__name__)

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
PRODUCT_DESCRIPTIONS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]


class AwsError(Exception):
    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        self.throttled = code in THROTTLING_CODES
        super().__init__(f"{operation} failed: {code}: {message}")


class RateLimiter:
    """A token bucket: `rate` calls per second on average, bursts of up to `burst`."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.updated = clock()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await self.sleep((1.0 - self.tokens) / self.rate)


@dataclass
class Backoff:
    """After a failure, leave AWS alone for a while: doubling from `base`, up to `cap`."""

    base: float = 5.0
    cap: float = 300.0
    failures: int = 0
    until: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> float:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0


class Aws:
    """boto3 clients per (service, region), and `call` with the policy above."""

    def __init__(
        self,
        endpoint_url: str | None = None,
        rate: float = 5.0,
        burst: int = 10,
        max_attempts: int | None = None,
        throttle_retries: int = 1,
        throttle_pause: float = 2.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        session: Any = None,
    ) -> None:
        import boto3

        self.endpoint_url = endpoint_url
        # botocore's own variable, which an explicit retry config would otherwise override.
        self.max_attempts = max_attempts or int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
        self.throttle_retries = throttle_retries
        self.throttle_pause = throttle_pause
        self.sleep = sleep
        self.session = session or boto3.session.Session()
        self.limiter = RateLimiter(rate, burst, sleep=sleep)
        self.clients: dict[tuple[str, str], Any] = {}
        self.calls = 0

    def client(self, service: str, region: str) -> Any:
        from botocore.config import Config

        key = (service, region)
        if key not in self.clients:
            config = Config(
                region_name=region,
                retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                connect_timeout=5,
                read_timeout=30,
                user_agent_extra="kubetune-operator",
            )
            kwargs = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
            self.clients[key] = self.session.client(service, config=config, **kwargs)
        return self.clients[key]

    async def call(self, service: str, region: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(service, region)
        method = getattr(client, operation)
        name = client.meta.method_to_api_mapping.get(operation, operation)
        for attempt in range(self.throttle_retries + 1):
            await self.limiter.acquire()
            self.calls += 1
            try:
                return await asyncio.to_thread(method, **kwargs)
            except ClientError as error:
                details = error.response.get("Error", {})
                failure = AwsError(name, details.get("Code", "Unknown"), details.get("Message", ""))
            except BotoCoreError as error:
                failure = AwsError(name, type(error).__name__, str(error))
            if not failure.throttled or attempt == self.throttle_retries:
                raise failure
            pause = self.throttle_pause * 2**attempt * (1 + random.random())
            logger.info("%s throttled after botocore's retries; again in %.1fs", name, pause)
            await self.sleep(pause)
        raise AssertionError("unreachable")


# ----- scaled groups ------------------------------------------------------------------


def _instances(group: dict[str, Any]) -> list[Instance]:
    out = []
    for instance in group.get("Instances") or []:
        launched = instance.get("LaunchTime")
        out.append(
            Instance(
                instance["InstanceId"],
                instance.get("LifecycleState", "InService"),
                launched.timestamp() if isinstance(launched, datetime) else None,
            )
        )
    return out


class AutoScalingGroup:
    """An EC2 Auto Scaling group (also what lies behind an EKS managed node group)."""

    def __init__(self, aws: Aws, region: str, name: str) -> None:
        self.aws, self.region, self.name = aws, region, name
        self.tags: dict[str, str] = {}

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        return await self.aws.call("autoscaling", self.region, operation, **kwargs)

    async def describe(self) -> dict[str, Any] | None:
        found = await self._call("describe_auto_scaling_groups", AutoScalingGroupNames=[self.name])
        groups = found.get("AutoScalingGroups") or []
        return groups[0] if groups else None

    async def state(self, node_instances: Sequence[str] = ()) -> GroupState:
        group = await self.describe()
        if group is None:
            raise AwsError(
                "DescribeAutoScalingGroups", "NotFound", f"no Auto Scaling group {self.name!r}"
            )
        self.tags = {t["Key"]: t.get("Value", "") for t in group.get("Tags") or []}
        instances = _instances(group)
        joined = set(node_instances)
        joining = [i.id for i in instances if i.id not in joined and i.live]
        if joining:  # when they were launched (the join timeout): EC2 knows, the group not
            launched = await self.launch_times(joining)
            instances = [
                Instance(i.id, i.state, launched.get(i.id, i.launched_at)) for i in instances
            ]
        return GroupState(
            desired=int(group["DesiredCapacity"]),
            min_size=int(group["MinSize"]),
            max_size=int(group["MaxSize"]),
            instances=instances,
        )

    async def launch_times(self, ids: Sequence[str]) -> dict[str, float]:
        found = await self.aws.call("ec2", self.region, "describe_instances", InstanceIds=list(ids))
        return {
            instance["InstanceId"]: instance["LaunchTime"].timestamp()
            for reservation in found.get("Reservations") or []
            for instance in reservation.get("Instances") or []
            if isinstance(instance.get("LaunchTime"), datetime)
        }

    async def set_desired(self, desired: int) -> None:
        await self._call(
            "set_desired_capacity",
            AutoScalingGroupName=self.name,
            DesiredCapacity=desired,
            HonorCooldown=False,
        )

    async def terminate(self, instance_id: str) -> None:
        """Remove this one instance and lower the desired capacity with it."""
        await self._call(
            "terminate_instance_in_auto_scaling_group",
            InstanceId=instance_id,
            ShouldDecrementDesiredCapacity=True,
        )

    async def ensure_tags(self, wanted: dict[str, str]) -> bool:
        """Write the tags that differ (from the last `state`); True when it wrote some."""
        missing = {k: v for k, v in wanted.items() if self.tags.get(k) != v}
        if not missing:
            return False
        await self._call(
            "create_or_update_tags",
            Tags=[
                {
                    "ResourceId": self.name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": False,
                }
                for key, value in sorted(missing.items())
            ],
        )
        self.tags.update(missing)
        return True


class EksNodegroup:
    """An EKS managed node group.

    Grows with `UpdateNodegroupConfig` (scalingConfig.desiredSize; EKS refuses a desired
    size outside the node group's own min and max, and a second update while one is in
    progress: `ResourceInUseException`, retried on the next tick). Shrinks by terminating
    specific instances in the Auto Scaling group EKS made for it (named in the node
    group's `resources.autoScalingGroups`), as the cluster autoscaler does; EKS follows
    the group's new size. When that group cannot be read, the pool shrinks only once
    every node is idle, by lowering desiredSize (then whichever instance EKS picks is empty).
    """

    def __init__(self, aws: Aws, region: str, cluster: str, nodegroup: str) -> None:
        self.aws, self.region = aws, region
        self.cluster, self.nodegroup = cluster, nodegroup
        self.scaling: dict[str, int] = {}
        self.asg: AutoScalingGroup | None = None

    async def state(self, node_instances: Sequence[str] = ()) -> GroupState:
        found = await self.aws.call(
            "eks",
            self.region,
            "describe_nodegroup",
            clusterName=self.cluster,
            nodegroupName=self.nodegroup,
        )
        nodegroup = found["nodegroup"]
        self.scaling = dict(nodegroup.get("scalingConfig") or {})
        groups = (nodegroup.get("resources") or {}).get("autoScalingGroups") or []
        instances: list[Instance] | None = None
        if groups:
            asg = AutoScalingGroup(self.aws, self.region, groups[0]["name"])
            try:
                described = await asg.describe()
            except AwsError as error:
                logger.warning("node group %s: its Auto Scaling group: %s", self.nodegroup, error)
                described = None
            if described is not None:
                self.asg = asg
                instances = _instances(described)
        if instances is None:
            self.asg = None
            instances = [Instance(i) for i in node_instances]
        return GroupState(
            desired=int(self.scaling.get("desiredSize", 0)),
            min_size=int(self.scaling.get("minSize", 0)),
            max_size=int(self.scaling.get("maxSize", 0)),
            instances=instances,
            can_remove_specific=self.asg is not None,
        )

    async def set_desired(self, desired: int) -> None:
        config = {
            "minSize": min(int(self.scaling.get("minSize", 0)), desired),
            "maxSize": int(self.scaling.get("maxSize", desired)),
            "desiredSize": desired,
        }
        await self.aws.call(
            "eks",
            self.region,
            "update_nodegroup_config",
            clusterName=self.cluster,
            nodegroupName=self.nodegroup,
            scalingConfig=config,
        )
        self.scaling.update(config)

    async def terminate(self, instance_id: str) -> None:
        if self.asg is None:
            raise AwsError(
                "TerminateInstanceInAutoScalingGroup",
                "Unsupported",
                f"the Auto Scaling group of node group {self.nodegroup} is unknown",
            )
        await self.asg.terminate(instance_id)

    async def ensure_tags(self, wanted: dict[str, str]) -> bool:
        return False  # EKS tags its own groups from the node group's labels and taints


Group = AutoScalingGroup | EksNodegroup


def group_for(aws: Aws, pool: NodePool) -> Group | None:
    provider = pool.provider
    if pool.region is None:
        return None
    if isinstance(provider, AsgProvider):
        return AutoScalingGroup(aws, pool.region, provider.autoScalingGroupName)
    if isinstance(provider, EksNodegroupProvider):
        return EksNodegroup(aws, pool.region, provider.cluster, provider.nodegroup)
    return None


# ----- spot prices --------------------------------------------------------------------


class SpotPriceBook:
    """Current spot prices per region, from DescribeSpotPriceHistory, refreshed now and then."""

    def __init__(
        self, aws: Aws, refresh_seconds: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.aws = aws
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.prices: dict[str, dict[tuple[str, str], float]] = {}
        self.fetched: dict[tuple[str, tuple[str, ...]], float] = {}

    async def refresh(self, region: str, instance_types: Iterable[str]) -> None:
        types = tuple(sorted(set(instance_types)))
        key = (region, types)
        now = self.clock()
        if now - self.fetched.get(key, -1e18) < self.refresh_seconds:
            return
        found = await self.aws.call(
            "ec2",
            region,
            "describe_spot_price_history",
            InstanceTypes=list(types),
            ProductDescriptions=PRODUCT_DESCRIPTIONS,
            StartTime=datetime.fromtimestamp(now, UTC),
        )
        history = [
            SpotPrice(
                entry["InstanceType"],
                entry["AvailabilityZone"],
                float(entry["SpotPrice"]),
                entry["Timestamp"].timestamp() if "Timestamp" in entry else 0.0,
            )
            for entry in found.get("SpotPriceHistory") or []
        ]
        self.prices.setdefault(region, {}).update(latest_spot_prices(history))
        self.fetched[key] = now

    def for_region(self, region: str | None) -> dict[tuple[str, str], float]:
        return dict(self.prices.get(region or "", {}))
