"""The capacity loop against moto and a fake Kubernetes API (no cluster): the cordon race,
a bad ConfigMap, an AWS failure reported on the experiment, cost handed to controllers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from kubetune.capacity.aws import Aws
from kubetune.capacity.manager import SCALE_DOWN_ANNOTATION, CapacityManager
from kubetune.spec import parse_experiment
from tests.capacity.conftest import INSTANCE_TYPE, REGION, ZONE, AsgWorld

LABELS = {"kubetune.dev/node-pool": "p"}
NEW_YEAR = 1767225600.0  # 2026-01-01T00:00:00Z, when the fake nodes were created


class Raw:
    def __init__(self, value: Any) -> None:
        self.data = json.dumps(value).encode()


class FakeCore:
    """The few CoreV1Api calls the manager makes, on dicts."""

    def __init__(self) -> None:
        self.pools_yaml: str | None = None
        self.nodes: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[Any] = []
        self.on_patch: Any = None

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Raw:
        if self.pools_yaml is None:
            raise ApiException(status=404)
        meta = {"name": name, "namespace": namespace, "uid": "cm-uid"}
        return Raw({"metadata": meta, "data": {"pools.yaml": self.pools_yaml}})

    def list_node(self, **_: Any) -> Raw:
        return Raw({"items": self.nodes})

    def list_pod_for_all_namespaces(
        self, label_selector: str | None = None, field_selector: str | None = None, **_: Any
    ) -> Raw:
        items = self.pods
        if label_selector:
            key, _, value = label_selector.partition("=")
            items = [
                p
                for p in items
                if key in p["metadata"].get("labels", {})
                and (not value or p["metadata"]["labels"][key] == value)
            ]
        if field_selector:
            node = field_selector.split(",")[0].removeprefix("spec.nodeName=")
            items = [
                p
                for p in items
                if p["spec"].get("nodeName") == node
                and p["status"]["phase"] not in ("Succeeded", "Failed")
            ]
        return Raw({"items": items})

    def patch_node(self, name: str, body: dict[str, Any]) -> None:
        self.patches.append((name, body))
        node = next(n for n in self.nodes if n["metadata"]["name"] == name)
        node["spec"]["unschedulable"] = bool(body["spec"]["unschedulable"])
        annotations = node["metadata"].setdefault("annotations", {})
        for key, value in body["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        if self.on_patch is not None:
            self.on_patch(name, body)

    def create_namespaced_event(self, namespace: str, event: Any) -> None:
        self.events.append(event)


def node(name: str, instance: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                **LABELS,
                "node.kubernetes.io/instance-type": INSTANCE_TYPE,
                "topology.kubernetes.io/zone": ZONE,
            },
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"providerID": f"aws:///{ZONE}/{instance}"},
        "status": {
            "allocatable": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, node_name: str | None, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"kubetune.dev/experiment": "e", "kubetune.dev/node-pool": "p"},
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": phase},
    }


def pools(asg: str, grace: float = 0.0) -> str:
    return yaml.safe_dump(
        {
            "pools": [
                {
                    "name": "p",
                    "provider": {"type": "aws-asg", "autoScalingGroupName": asg},
                    "region": REGION,
                    "instanceTypes": [INSTANCE_TYPE],
                    "gpusPerNode": 1,
                    "maxNodes": 2,
                    "capacityType": "on-demand",
                    "nodeLabels": LABELS,
                    "scaleDownGraceSeconds": grace,
                    "onDemandPriceUSDPerHour": {INSTANCE_TYPE: 36.0},
                }
            ]
        }
    )


class FakeController:
    def __init__(self, pool: str = "p") -> None:
        self.body = {
            "apiVersion": "kubetune.dev/v1alpha1",
            "metadata": {"name": "e", "namespace": "ns", "uid": "exp-uid"},
        }
        self.spec = parse_experiment(
            {
                "apiVersion": "kubetune.dev/v1alpha1",
                "kind": "HPOExperiment",
                "metadata": {"name": "e"},
                "spec": {
                    "objective": {"metric": "loss", "goal": "minimize"},
                    "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
                    "budget": {"maxTrials": 1},
                    "capacity": {"nodePool": pool},
                    "trialTemplate": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "t",
                                    "command": ["python"],
                                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                                }
                            ]
                        }
                    },
                },
            }
        ).spec
        self.cost_usd: float | None = 1.5  # stored in status by an earlier operator
        self.cost_at: float | None = None  # ... accounted up to then (None: not stored)
        self.updates: list[tuple[float, float, dict[str, Any] | None]] = []
        self.accounted_at: list[float | None] = []

    async def capacity_update(
        self, usd: float, rate: float, condition: Any, accounted_at: float | None = None
    ) -> None:
        self.updates.append((usd, rate, condition))
        self.accounted_at.append(accounted_at)


def manager_for(core: FakeCore, controller: FakeController, clock: list[float]) -> CapacityManager:
    async def no_sleep(_: float) -> None:
        return None

    return CapacityManager(
        core,
        lambda: {("ns", "e"): controller},
        Aws(max_attempts=1, sleep=no_sleep),
        interval=1.0,
        clock=lambda: clock[0],
    )


NODE_NAMES = ("first", "second")


def idle_pool_manager(
    asg: AsgWorld, count: int, demand: Mapping[tuple[str, str], Any]
) -> tuple[FakeCore, CapacityManager, list[float], list[str]]:
    """A pool of `count` nodes (named first, second, ...) with a 600 s grace period, a
    manager loaded on it with `demand` as its experiments' (spec, slots_ahead), its clock."""
    autoscaling = asg.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=count)
    instances = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name, grace=600.0)
    core.nodes = [node(name, i) for name, i in zip(NODE_NAMES, instances, strict=False)]
    clock = [NEW_YEAR + 1000.0]
    manager = manager_for(core, FakeController(), clock)
    manager.demand = lambda: demand
    manager.load()
    return core, manager, clock, instances


async def test_a_pod_that_lands_after_the_cordon_keeps_its_node(asg: AsgWorld) -> None:
    autoscaling = asg.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=1)
    (instance,) = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name)
    core.nodes = [node("n1", instance)]

    def race(name: str, body: dict[str, Any]) -> None:
        if body["spec"]["unschedulable"]:  # the scheduler was quicker than the cordon
            core.pods.append(pod("late", "n1"))

    core.on_patch = race
    manager = manager_for(core, FakeController(), [1000.0])
    manager.load()
    await manager.tick()
    assert asg.instances() == [instance] and asg.group()["DesiredCapacity"] == 1
    assert [body["spec"]["unschedulable"] for _, body in core.patches] == [True, None]
    assert core.nodes[0]["spec"]["unschedulable"] is False
    assert SCALE_DOWN_ANNOTATION not in core.nodes[0]["metadata"].get("annotations", {})


@pytest.mark.parametrize("late", ["pod", "gang"])
async def test_demand_that_arrives_during_a_scale_down_keeps_the_node(
    asg: AsgWorld, late: str
) -> None:
    """The plan saw an idle node and nothing waiting; between the plan and the
    termination a trial pod was created (not bound yet: the scheduler, its cache behind
    the cordon, may bind it there next), or a gang was admitted whose pods are about to
    be. Terminating would take the node from under it: the node is uncordoned and kept.
    (Found on the control plane: a gang admitted as two others ended lost a rank with
    the node, an interruption.)"""
    autoscaling = asg.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=1)
    (instance,) = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name)
    core.nodes = [node("n1", instance)]
    manager = manager_for(core, FakeController(), [1000.0])
    manager.load()

    def arrive(name: str, body: dict[str, Any]) -> None:
        if not body["spec"]["unschedulable"]:
            return
        if late == "pod":
            waiting = pod("e-3-a1", None, phase="Pending")
            waiting["metadata"]["labels"].update(
                {"kubetune.dev/trial": "e-3", "kubetune.dev/attempt": "1"}
            )
            core.pods.append(waiting)
        else:
            manager.gangs.observed(manager.pools, {"p": core.nodes}, [], 1000.0)
            assert manager.gangs.admit("p", ("ns", "e-4", "1"), 1, 1000.0) is None

    core.on_patch = arrive
    await manager.tick()
    assert asg.instances() == [instance] and asg.group()["DesiredCapacity"] == 1
    assert [body["spec"]["unschedulable"] for _, body in core.patches] == [True, None]
    assert core.nodes[0]["spec"]["unschedulable"] is False


async def test_an_admitted_gang_without_pods_yet_keeps_the_idle_nodes_it_needs(
    asg: AsgWorld,
) -> None:
    """Two gangs just ended and left two idle nodes; the waiting gang was admitted and
    its pods are being created. The plan counts its two ranks as waiting pods: no node
    is cordoned, none terminated; a third idle node, which nothing needs, goes."""
    autoscaling = asg.client("autoscaling")
    autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg.name, MaxSize=3)
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=3)
    instances = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name).replace("maxNodes: 2", "maxNodes: 3")
    core.nodes = [node(f"n{i}", instance) for i, instance in enumerate(instances)]
    manager = manager_for(core, FakeController(), [1000.0])
    manager.load()
    manager.gangs.observed(manager.pools, {"p": core.nodes}, [], 1000.0)
    assert manager.gangs.admit("p", ("ns", "e-2", "1"), 2, 1000.0, pods=2) is None
    await manager.tick()
    assert len(asg.instances()) == 2 and asg.group()["DesiredCapacity"] == 2
    assert len([body for _, body in core.patches if body["spec"]["unschedulable"]]) == 1
    # Once its pods are listed, they are the demand: the reservation is not counted twice.
    assert manager.gangs.unlisted("p", {("ns", "e-2", "1")}) == {}
    assert [p.gpus for p in manager.gangs.unlisted("p", set())[("ns", "e-2", "1")]] == [1, 1]


async def test_an_empty_node_is_cordoned_and_its_instance_terminated(asg: AsgWorld) -> None:
    autoscaling = asg.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=2)
    busy, empty = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name)
    core.nodes = [node("busy", busy), node("empty", empty)]
    core.pods = [pod("trial", "busy")]
    controller = FakeController()
    clock = [NEW_YEAR + 1000.0]
    manager = manager_for(core, controller, clock)
    manager.load()
    await manager.tick()
    assert asg.instances() == [busy] and asg.group()["DesiredCapacity"] == 1
    assert [name for name, _ in core.patches] == ["empty"]
    # The second tick accounts its 10 s: the busy node, and the empty one, which the
    # operator counts until the tick that no longer sees its Node (at most a tick more).
    core.nodes = [node("busy", busy)]
    core.pods = [pod("trial", "busy")]
    core.pods[0]["status"]["containerStatuses"] = [
        {"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    ]
    clock[0] += 10.0
    await manager.tick()
    usd, rate, condition = controller.updates[-1]
    # $1.50 stored + 2 nodes x 10 s x $0.01/s, all the trial's experiment's = $1.70.
    assert usd == pytest.approx(1.70) and rate == pytest.approx(36.0)
    assert condition["type"] == "NodePoolReady" and condition["status"] == "True"


async def test_a_restarted_loop_counts_the_time_no_operator_watched(asg: AsgWorld) -> None:
    """An earlier operator stored $1.50 accounted up to 00:15:00 and died. This one's first
    tick, at 00:16:40, still sees the node (there since 00:00) and the trial pod running
    on it: the 100 s between are the experiment's, $1.00 at $36/h."""
    autoscaling = asg.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=asg.name, DesiredCapacity=1)
    (instance,) = asg.instances()
    core = FakeCore()
    core.pools_yaml = pools(asg.name, grace=3600.0)
    core.nodes = [node("busy", instance)]
    core.pods = [pod("trial", "busy")]
    core.pods[0]["status"]["containerStatuses"] = [
        {"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    ]
    controller = FakeController()
    controller.cost_at = NEW_YEAR + 900.0
    clock = [NEW_YEAR + 1000.0]
    manager = manager_for(core, controller, clock)
    manager.load()
    await manager.tick()
    assert controller.updates[-1][0] == pytest.approx(2.50)
    assert controller.accounted_at[-1] == NEW_YEAR + 1000.0
    clock[0] += 10.0
    await manager.tick()
    assert controller.updates[-1][0] == pytest.approx(2.60)
    assert controller.accounted_at[-1] == NEW_YEAR + 1010.0


async def test_a_bad_configmap_is_reported_and_the_old_pools_stay(asg: AsgWorld) -> None:
    core = FakeCore()
    core.pools_yaml = pools(asg.name)
    manager = manager_for(core, FakeController(), [0.0])
    manager.load()
    assert set(manager.pools) == {"p"}
    core.pools_yaml = core.pools_yaml.replace("gpusPerNode: 1", "gpusPerNode: 0")
    await manager.tick()
    assert set(manager.pools) == {"p"} and manager.pools["p"].gpusPerNode == 1
    (event,) = [e for e in core.events if e.reason == "InvalidNodePools"]
    assert event.type == "Warning" and "pools[0].gpusPerNode" in event.message
    assert event.involved_object.kind == "ConfigMap"
    await manager.tick()  # the same problem is not posted again
    assert len([e for e in core.events if e.reason == "InvalidNodePools"]) == 1


async def test_an_aws_failure_becomes_a_condition_and_an_event(aws_env: str) -> None:
    core = FakeCore()
    core.pools_yaml = pools("no-such-group")
    core.pods = [pod("waiting", None, phase="Pending")]
    controller = FakeController()
    clock = [0.0]
    manager = manager_for(core, controller, clock)
    manager.load()
    await manager.tick()
    _, _, condition = controller.updates[-1]
    assert condition["status"] == "False" and condition["reason"] == "ScalingFailed"
    assert "DescribeAutoScalingGroups failed: NotFound" in condition["message"]
    (event,) = [e for e in core.events if e.reason == "NodePoolScalingFailed"]
    assert event.involved_object.kind == "HPOExperiment" and event.type == "Warning"
    calls = manager.aws.calls  # type: ignore[union-attr]
    clock[0] += 1.0  # backing off (5 s): no AWS call
    await manager.tick()
    assert manager.aws.calls == calls  # type: ignore[union-attr]


def test_placement_and_unknown_pools(asg: AsgWorld) -> None:
    core = FakeCore()
    core.pools_yaml = pools(asg.name)
    manager = manager_for(core, FakeController(), [0.0])
    manager.load()
    where = manager.placement_for(FakeController().spec)
    assert where is not None and where.node_selector == LABELS
    other = FakeController(pool="elsewhere").spec
    assert manager.check(other) == (
        "no node pool named 'elsewhere' in ConfigMap kubetune-system/kubetune-node-pools (known: p)"
    )
    assert manager.check(FakeController().spec) is None


@pytest.mark.parametrize(("slots", "removed"), [(1, True), (2, False), (None, False)])
async def test_an_idle_node_no_trial_can_use_goes_without_the_grace_period(
    asg: AsgWorld, slots: int | None, removed: bool
) -> None:
    # The experiment's engine: at most `slots` trials at once from now on (None: unknown).
    demand = {("ns", "e"): (FakeController().spec, slots)}
    core, manager, clock, (first, second) = idle_pool_manager(asg, 2, demand)
    core.pods = [pod("a", "first"), pod("b", "second")]
    await manager.tick()  # the loop's first tick: the grace period starts for it too
    assert asg.instances() == [first, second]
    # 600 s on, trial b ends: its node has been idle for 0 s of its 600 s grace period.
    clock[0] += 600.0
    core.pods = [pod("a", "first"), pod("b", "second", phase="Succeeded")]
    await manager.tick()
    assert (asg.instances() == [first]) is removed
    assert ([name for name, _ in core.patches] == ["second"]) is removed


async def test_a_loop_just_started_keeps_idle_nodes_until_it_has_settled(asg: AsgWorld) -> None:
    # Just started, the operator may not have been told of every experiment yet: an idle
    # node that no experiment it knows can use waits the loop's 60 s settling time.
    _, manager, clock, (instance,) = idle_pool_manager(asg, 1, {})
    await manager.tick()
    clock[0] += 59.0
    await manager.tick()
    assert asg.instances() == [instance]
    clock[0] += 1.0
    await manager.tick()
    assert asg.instances() == []


async def test_a_pod_of_an_experiment_the_operator_does_not_hold_keeps_the_grace_period(
    asg: AsgWorld,
) -> None:
    # A trial pod on the pool from an experiment the registry does not hold (another
    # namespace's operator, or one not delivered yet): what its trials will still want
    # is not known, so the idle node waits its grace period.
    core, manager, clock, (first, second) = idle_pool_manager(asg, 2, {})
    other = pod("x", "first")
    other["metadata"]["namespace"] = "team-b"
    other["metadata"]["labels"]["kubetune.dev/experiment"] = "asha-b"
    core.pods = [other]
    await manager.tick()
    clock[0] += 61.0
    await manager.tick()
    assert asg.instances() == [first, second]
    core.pods = []  # gone: no experiment uses the pool, and the loop has settled
    await manager.tick()
    assert asg.instances() == []
