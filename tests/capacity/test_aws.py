"""The boto3 shell against moto's server (loopback), and AWS faults injected at the boto3
edge (`faults.BotocoreFaults`): throttling retried, errors turned into AwsError."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.capacity.aws import (
    AutoScalingGroup,
    Aws,
    AwsError,
    Backoff,
    EksNodegroup,
    RateLimiter,
    SpotPriceBook,
)
from kubetune.capacity.pools import node_template_tags, parse_node_pools
from tests.capacity.conftest import INSTANCE_TYPE, REGION, ZONE, AsgWorld, make_asg
from tests.capacity.faults import BotocoreFaults, Fault


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's back-off between retries, without the waiting."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


async def test_asg_grow_terminate_one_and_tag(asg: AsgWorld) -> None:
    group = AutoScalingGroup(Aws(sleep=no_sleep), REGION, asg.name)
    state = await group.state()
    assert (state.desired, state.min_size, state.max_size, state.instances) == (0, 0, 4, [])
    await group.set_desired(2)
    state = await group.state()
    assert state.desired == 2 and len(state.instances) == 2
    assert all(i.live and i.launched_at for i in state.instances)
    gone = state.instances[0].id
    await group.terminate(gone)
    assert asg.group()["DesiredCapacity"] == 1 and gone not in asg.instances()
    pool = parse_node_pools(
        f"""
        pools:
          - name: p
            provider: {{type: aws-asg, autoScalingGroupName: {asg.name}}}
            region: {REGION}
            instanceTypes: [{INSTANCE_TYPE}]
            gpusPerNode: 4
            maxNodes: 4
            nodeLabels: {{kubetune.dev/node-pool: p}}
            taints: [{{key: nvidia.com/gpu, value: "true"}}]
        """
    ).pools[0]
    assert await group.ensure_tags(node_template_tags(pool))
    await group.state()
    assert not await group.ensure_tags(node_template_tags(pool))  # all there already
    tags = {t["Key"]: t["Value"] for t in asg.group()["Tags"]}
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{prefix}/resources/nvidia.com/gpu"] == "4"
    assert tags[f"{prefix}/label/kubetune.dev/node-pool"] == "p"
    assert tags[f"{prefix}/taint/nvidia.com/gpu"] == "true:NoSchedule"


async def test_a_missing_group_is_an_aws_error(aws_env: str) -> None:
    with pytest.raises(AwsError) as caught:
        await AutoScalingGroup(Aws(sleep=no_sleep), REGION, "nope").state()
    assert caught.value.code == "NotFound" and not caught.value.throttled


def eks_nodegroup(url: str, max_size: int = 4) -> tuple[str, str, str]:
    import boto3

    eks = boto3.client("eks", region_name=REGION, endpoint_url=url)
    cluster = f"c-{id(eks) % 100000}"
    eks.create_cluster(
        name=cluster, roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={}
    )
    created = eks.create_nodegroup(
        clusterName=cluster,
        nodegroupName="gpu",
        nodeRole="arn:aws:iam::123456789012:role/node",
        subnets=["subnet-1"],
        scalingConfig={"minSize": 0, "maxSize": max_size, "desiredSize": 0},
    )["nodegroup"]
    return cluster, "gpu", created["resources"]["autoScalingGroups"][0]["name"]


async def test_eks_nodegroup_grows_by_update_config_and_shrinks_in_its_asg(aws_env: str) -> None:
    import boto3

    cluster, name, asg_name = eks_nodegroup(aws_env)
    # EKS makes the Auto Scaling group behind a node group; moto does not, so the test does.
    backing = make_asg(aws_env, name=asg_name)
    group = EksNodegroup(Aws(sleep=no_sleep), REGION, cluster, name)
    state = await group.state()
    assert state.can_remove_specific and (state.desired, state.max_size) == (0, 4)
    await group.set_desired(2)
    eks = boto3.client("eks", region_name=REGION, endpoint_url=aws_env)
    config = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
    assert config["scalingConfig"] == {"minSize": 0, "maxSize": 4, "desiredSize": 2}
    backing.client("autoscaling").set_desired_capacity(
        AutoScalingGroupName=asg_name, DesiredCapacity=2
    )  # what EKS would do
    victim = backing.instances()[0]
    await group.terminate(victim)
    assert victim not in backing.instances() and backing.group()["DesiredCapacity"] == 1


async def test_eks_nodegroup_without_its_asg_cannot_remove_one_instance(aws_env: str) -> None:
    cluster, name, _ = eks_nodegroup(aws_env)
    group = EksNodegroup(Aws(sleep=no_sleep), REGION, cluster, name)
    state = await group.state(["i-0a", "i-0b"])
    assert not state.can_remove_specific
    assert [i.id for i in state.instances] == ["i-0a", "i-0b"]  # from the Nodes
    with pytest.raises(AwsError) as caught:
        await group.terminate("i-0a")
    assert caught.value.code == "Unsupported"


async def test_spot_prices_come_from_describe_spot_price_history(aws_env: str) -> None:
    import boto3

    aws = Aws(sleep=no_sleep)
    clock = [1000.0]
    book = SpotPriceBook(aws, refresh_seconds=600, clock=lambda: clock[0])
    await book.refresh(REGION, [INSTANCE_TYPE])
    expected = boto3.client(
        "ec2", region_name=REGION, endpoint_url=aws_env
    ).describe_spot_price_history(InstanceTypes=[INSTANCE_TYPE])["SpotPriceHistory"]
    prices = book.for_region(REGION)
    assert prices[(INSTANCE_TYPE, ZONE)] == float(
        next(e["SpotPrice"] for e in expected if e["AvailabilityZone"] == ZONE)
    )
    calls = aws.calls
    clock[0] += 599
    await book.refresh(REGION, [INSTANCE_TYPE])
    assert aws.calls == calls  # cached for refresh_seconds
    clock[0] += 2
    await book.refresh(REGION, [INSTANCE_TYPE])
    assert aws.calls == calls + 1


async def test_throttling_is_retried_by_botocore(asg: AsgWorld, quick_retries: Any) -> None:
    aws = Aws(max_attempts=5, sleep=no_sleep)
    faults = BotocoreFaults()
    faults.attach(aws.client("autoscaling", REGION))
    faults.add(Fault("SetDesiredCapacity", "Throttling", times=3))
    await AutoScalingGroup(aws, REGION, asg.name).set_desired(1)
    assert faults.sent.count("SetDesiredCapacity") == 4  # 3 throttled, then through
    assert aws.calls == 1 and asg.group()["DesiredCapacity"] == 1


async def test_lasting_throttling_is_retried_once_more_then_reported(
    asg: AsgWorld, quick_retries: Any
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    aws = Aws(max_attempts=3, throttle_retries=1, throttle_pause=2.0, sleep=sleep)
    faults = BotocoreFaults()
    faults.attach(aws.client("autoscaling", REGION))
    faults.add(Fault("SetDesiredCapacity", "Throttling"))
    with pytest.raises(AwsError) as caught:
        await AutoScalingGroup(aws, REGION, asg.name).set_desired(1)
    assert caught.value.throttled and caught.value.operation == "SetDesiredCapacity"
    assert faults.sent.count("SetDesiredCapacity") == 6  # 3 by botocore, twice
    assert len(pauses) == 1 and 2.0 <= pauses[0] <= 4.0  # our own pause between the two
    assert asg.group()["DesiredCapacity"] == 0


async def test_server_errors_and_refusals_become_aws_errors(
    asg: AsgWorld, quick_retries: Any
) -> None:
    aws = Aws(max_attempts=2, sleep=no_sleep)
    faults = BotocoreFaults()
    faults.attach(aws.client("autoscaling", REGION))
    faults.add(Fault("TerminateInstanceInAutoScalingGroup", "InternalFailure", status=500))
    faults.add(Fault("SetDesiredCapacity", "ValidationError", message="bad capacity", times=1))
    group = AutoScalingGroup(aws, REGION, asg.name)
    with pytest.raises(AwsError) as caught:
        await group.terminate("i-1")
    assert caught.value.code == "InternalFailure"
    assert faults.sent.count("TerminateInstanceInAutoScalingGroup") == 2  # retried: 5xx
    with pytest.raises(AwsError) as caught:
        await group.set_desired(1)
    assert (caught.value.code, caught.value.message) == ("ValidationError", "bad capacity")
    assert faults.sent.count("SetDesiredCapacity") == 1  # a refusal is not retried


async def test_an_unreachable_endpoint_is_an_aws_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.operator.harness import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws = Aws(endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, sleep=no_sleep)
    with pytest.raises(AwsError) as caught:
        await AutoScalingGroup(aws, REGION, "x").state()
    assert caught.value.code == "EndpointConnectionError"


async def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        await limiter.acquire()
    # Two at once (the burst), then one every 0.5 s.
    assert slept == pytest.approx([0.5, 0.5]) and now[0] == pytest.approx(1.0)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=5, cap=30)
    assert [backoff.failed(100.0) for _ in range(5)] == [5, 10, 20, 30, 30]
    assert not backoff.ready(129.0) and backoff.ready(130.0)
    backoff.succeeded()
    assert backoff.ready(0.0) and backoff.failed(0.0) == 5
