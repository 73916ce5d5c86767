"""Fixtures for the capacity tests: moto's server on loopback, AWS credentials that go
nowhere else, and Auto Scaling groups of fake GPU instances."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.prereq import require_module

REGION = "us-east-1"
INSTANCE_TYPE = "g5.xlarge"
ZONE = "us-east-1a"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    moto_server = require_module("moto.server", "moto[server] (the dev extra)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> str:
    """Credentials and region for moto; AWS_ENDPOINT_URL at moto (tests may override)."""
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_url


@dataclass
class AsgWorld:
    """An Auto Scaling group on moto, and clients to look at it."""

    name: str
    url: str

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.url)

    def group(self) -> dict:
        found = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.name]
        )
        return found["AutoScalingGroups"][0]

    def instances(self) -> list[str]:
        return sorted(
            i["InstanceId"]
            for i in self.group()["Instances"]
            if i["LifecycleState"] in ("Pending", "InService")
        )


def make_asg(url: str, max_size: int = 4, name: str | None = None) -> AsgWorld:
    import boto3

    name = name or f"gpu-{uuid.uuid4().hex[:8]}"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
    template = f"lt-{name}"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": INSTANCE_TYPE},
    )
    boto3.client("autoscaling", region_name=REGION, endpoint_url=url).create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=0,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        AvailabilityZones=[ZONE],
    )
    return AsgWorld(name, url)


@pytest.fixture
def asg(aws_env: str) -> AsgWorld:
    return make_asg(aws_env)
