"""Node pools: the GPU capacity the operator scales, read from its own configuration.

The configuration is one ConfigMap, `kubetune-system/kubetune-node-pools`, key `pools.yaml`::

    pools:
      - name: gpu-spot
        provider: {type: aws-asg, autoScalingGroupName: gpu-spot-asg}
        # or {type: aws-eks-nodegroup, cluster: prod, nodegroup: gpu-spot}
        # or {type: none}: Karpenter or the cluster autoscaler scale it; kubetune places
        #    trials on it and accounts its cost
        region: us-east-1
        instanceTypes: [g5.xlarge]
        gpusPerNode: 1
        minNodes: 0
        maxNodes: 8
        capacityType: spot            # or on-demand
        nodeLabels: {kubetune.dev/node-pool: gpu-spot}   # select the pool's nodes
        taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]
        scaleDownGraceSeconds: 300
        surplusGraceSeconds: 0        # for nodes no running experiment can use any more
        onDemandPriceUSDPerHour: {g5.xlarge: 1.006}      # required for on-demand pools

Why a ConfigMap and not a CRD (`HPONodePool`): pools are the platform administrator's
configuration of the operator, a handful that change rarely, read by the operator alone.
A ConfigMap adds no API type to version, convert and install before the operator, goes
through GitOps like the rest of `manifests/`, and is read with one `get` on one named
object (the same least-privilege shape as the token key). What a CRD would add —
admission-time validation and a status per pool — is covered otherwise: the operator
validates the ConfigMap with these models and reports every bad field, with its path, as
a Warning Event on the ConfigMap (the pools it had keep working); a pool's desired and
current size go to Prometheus (`observability.observe_node_pool`) and scaling failures
to the conditions and Events of the experiments that use the pool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kubetune.names import LABEL_POOL as LABEL_POOL  # re-exported: pools' API
from kubetune.placement import Placement as Placement
from kubetune.placement import apply_placement as apply_placement
from kubetune.spec import OBJECT_NAME_PATTERN, ExperimentSpec, problems_from_validation_error

CONFIGMAP_NAMESPACE = "kubetune-system"
CONFIGMAP_NAME = "kubetune-node-pools"
CONFIGMAP_KEY = "pools.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
NODE_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class CapacityType(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class AsgProvider(_Model):
    """An EC2 Auto Scaling group: scaled with SetDesiredCapacity, shrunk by terminating
    one specific empty instance at a time (ShouldDecrementDesiredCapacity=True)."""

    type: Literal["aws-asg"]
    autoScalingGroupName: str = Field(min_length=1, max_length=255)
    writeNodeTemplateTags: bool = Field(
        default=True,
        description="Tag the group with k8s.io/cluster-autoscaler/node-template/... (GPUs, "
        "labels, taints) so that a scaler can size it from zero.",
    )


class EksNodegroupProvider(_Model):
    """An EKS managed node group: grown with UpdateNodegroupConfig (desiredSize); shrunk by
    terminating specific empty instances in the Auto Scaling group behind it, as the
    cluster autoscaler does (lowering desiredSize would let EKS pick any node, a busy one
    included)."""

    type: Literal["aws-eks-nodegroup"]
    cluster: str = Field(min_length=1, max_length=100)
    nodegroup: str = Field(min_length=1, max_length=63)


class NoProvider(_Model):
    """Something else scales the pool (Karpenter, the cluster autoscaler); kubetune places
    trials on it and accounts its cost."""

    type: Literal["none"]


Provider = Annotated[AsgProvider | EksNodegroupProvider | NoProvider, Field(discriminator="type")]
PROVIDER_TYPES = ("aws-asg", "aws-eks-nodegroup", "none")


class Taint(_Model):
    key: str = Field(pattern=LABEL_KEY_PATTERN, max_length=316)
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    def toleration(self) -> dict[str, str]:
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


class NodePool(_Model):
    name: str = Field(pattern=OBJECT_NAME_PATTERN, max_length=63)
    provider: Provider
    region: str | None = Field(default=None, pattern=REGION_PATTERN)
    instanceTypes: list[str] = Field(min_length=1, max_length=20)
    gpusPerNode: int = Field(ge=1, le=64)
    minNodes: int = Field(default=0, ge=0, le=1000)
    maxNodes: int = Field(ge=0, le=1000)
    capacityType: CapacityType = CapacityType.SPOT
    nodeLabels: dict[str, str] = Field(min_length=1, max_length=20)
    taints: list[Taint] = Field(default_factory=list, max_length=20)
    scaleDownGraceSeconds: float = Field(default=300.0, ge=0, le=86400)
    # An idle node beyond what the pool's experiments can still use at once (their trials
    # still to run: `Engine.slots_ahead`) waits this long instead; raise it to keep warm
    # nodes for the next experiment of a pipeline.
    surplusGraceSeconds: float = Field(default=0.0, ge=0, le=86400)
    onDemandPriceUSDPerHour: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> NodePool:
        problems: list[str] = []
        if self.minNodes > self.maxNodes:
            problems.append(f"minNodes: must not exceed maxNodes ({self.maxNodes})")
        if self.provider.type != "none" and self.region is None:
            problems.append(f"region: required by provider {self.provider.type}")
        for key in self.nodeLabels:
            if not re.match(LABEL_KEY_PATTERN, key):
                problems.append(f"nodeLabels.{key}: not a valid label key")
        for instance_type in self.onDemandPriceUSDPerHour:
            if instance_type not in self.instanceTypes:
                problems.append(
                    f"onDemandPriceUSDPerHour.{instance_type}: not one of instanceTypes"
                )
        if self.capacityType is CapacityType.ON_DEMAND:
            for instance_type in self.instanceTypes:
                if instance_type not in self.onDemandPriceUSDPerHour:
                    problems.append(
                        f"onDemandPriceUSDPerHour.{instance_type}: required for "
                        f"capacityType on-demand"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def scalable(self) -> bool:
        return self.provider.type != "none"


class NodePoolConfig(_Model):
    pools: list[NodePool] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> NodePoolConfig:
        seen: set[str] = set()
        for index, pool in enumerate(self.pools):
            if pool.name in seen:
                raise ValueError(f"pools[{index}].name: duplicate pool name {pool.name!r}")
            seen.add(pool.name)
        return self

    def by_name(self) -> dict[str, NodePool]:
        return {pool.name: pool for pool in self.pools}


class PoolConfigError(ValueError):
    """An invalid node pool configuration: one `path: reason` line per problem."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "") -> None:
        self.problems = list(problems)
        head = f"invalid node pool configuration{f' in {source}' if source else ''}:"
        super().__init__("\n".join([head, *(f"  {p}: {r}" for p, r in self.problems)]))

    def summary(self) -> str:
        return "; ".join(f"{path}: {reason}" for path, reason in self.problems)


def parse_node_pools(text: str, source: str = "") -> NodePoolConfig:
    """The pools in a `pools.yaml` document; `PoolConfigError` names every bad field."""
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        raise PoolConfigError([("", f"not valid YAML: {error}")], source) from None
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise PoolConfigError([("", "expected a mapping with a `pools` list")], source)
    try:
        return NodePoolConfig.model_validate(document)
    except ValidationError as error:
        problems = [
            (_drop_tags(path), reason) for path, reason in problems_from_validation_error(error)
        ]
        raise PoolConfigError(problems, source) from None


def _drop_tags(path: str) -> str:
    # pydantic names the union member it tried (`provider.aws-asg.autoScalingGroupName`).
    for tag in PROVIDER_TYPES:
        path = path.replace(f".{tag}.", ".").removesuffix(f".{tag}")
    return path


# ----- where trial pods go ------------------------------------------------------------


def placement(pool: NodePool) -> Placement:
    return Placement(
        pool.name, dict(pool.nodeLabels), tuple(taint.toleration() for taint in pool.taints)
    )


def node_in_pool(pool: NodePool, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in pool.nodeLabels.items())


def node_template_tags(pool: NodePool) -> dict[str, str]:
    """The tags that let a scaler build a node from an Auto Scaling group at size zero."""
    tags = {f"{NODE_TEMPLATE}/resources/{GPU_RESOURCE}": str(pool.gpusPerNode)}
    for key, value in pool.nodeLabels.items():
        tags[f"{NODE_TEMPLATE}/label/{key}"] = value
    for taint in pool.taints:
        tags[f"{NODE_TEMPLATE}/taint/{taint.key}"] = f"{taint.value or ''}:{taint.effect}"
    return tags


# ----- GPUs ---------------------------------------------------------------------------


def container_gpus(containers: Iterable[Mapping[str, Any]]) -> int:
    """GPUs the containers ask for (limits win over requests, as for extended resources)."""
    total = 0
    for container in containers:
        resources = container.get("resources") or {}
        amount = (resources.get("limits") or {}).get(GPU_RESOURCE)
        if amount is None:
            amount = (resources.get("requests") or {}).get(GPU_RESOURCE)
        if amount is not None:
            try:
                total += int(str(amount))
            except ValueError:
                continue
    return total


def trial_gpus(spec: ExperimentSpec) -> int:
    template = spec.trialTemplate.spec.model_dump(mode="json", exclude_none=True)
    return container_gpus(template.get("containers", []))


def pod_gpus(pod: Mapping[str, Any]) -> int:
    return container_gpus((pod.get("spec") or {}).get("containers") or [])
