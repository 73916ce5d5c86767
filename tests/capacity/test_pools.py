"""Node pool configuration: validation with field paths, placement of trial pods, tags."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from kubetune.capacity.pools import (
    LABEL_POOL,
    Placement,
    PoolConfigError,
    apply_placement,
    node_in_pool,
    node_template_tags,
    parse_node_pools,
    placement,
    pod_gpus,
    trial_gpus,
)
from kubetune.operator.pods import trial_pod
from kubetune.spec import parse_experiment
from kubetune.trialenv import AttemptContext

GOOD = textwrap.dedent(
    """
    pools:
      - name: gpu-spot
        provider: {type: aws-asg, autoScalingGroupName: gpu-spot-asg}
        region: us-east-1
        instanceTypes: [g5.12xlarge]
        gpusPerNode: 4
        maxNodes: 8
        nodeLabels: {kubetune.dev/node-pool: gpu-spot}
        taints: [{key: nvidia.com/gpu, value: "true"}, {key: spot, effect: NoExecute}]
      - name: eks-od
        provider: {type: aws-eks-nodegroup, cluster: prod, nodegroup: gpu}
        region: eu-west-1
        instanceTypes: [p4d.24xlarge]
        gpusPerNode: 8
        minNodes: 1
        maxNodes: 2
        capacityType: on-demand
        nodeLabels: {pool: eks-od}
        onDemandPriceUSDPerHour: {p4d.24xlarge: 32.77}
      - name: karpenter
        provider: {type: none}
        instanceTypes: [g6.xlarge]
        gpusPerNode: 1
        maxNodes: 0
        nodeLabels: {karpenter.sh/nodepool: gpu}
    """
)


def test_a_good_configuration() -> None:
    pools = parse_node_pools(GOOD).by_name()
    assert set(pools) == {"gpu-spot", "eks-od", "karpenter"}
    spot = pools["gpu-spot"]
    assert spot.capacityType.value == "spot" and spot.scaleDownGraceSeconds == 300
    assert spot.provider.type == "aws-asg" and spot.provider.writeNodeTemplateTags
    assert not pools["karpenter"].scalable
    assert parse_node_pools("").pools == []


def test_every_bad_field_is_named() -> None:
    text = textwrap.dedent(
        """
        pools:
          - name: Bad_Name
            provider: {type: aws-asg}
            instanceTypes: []
            gpusPerNode: 0
            maxNodes: 2
            nodeLabels: {a: b}
            colour: blue
          - name: od
            provider: {type: aws-eks-nodegroup, cluster: c, nodegroup: n}
            instanceTypes: [g5.xlarge]
            gpusPerNode: 1
            minNodes: 3
            maxNodes: 2
            capacityType: on-demand
            nodeLabels: {a: b}
        """
    )
    with pytest.raises(PoolConfigError) as caught:
        parse_node_pools(text, "kubetune-system/kubetune-node-pools")
    problems = dict(caught.value.problems)
    assert set(problems) == {
        "pools[0].name",
        "pools[0].provider.autoScalingGroupName",
        "pools[0].instanceTypes",
        "pools[0].gpusPerNode",
        "pools[0].colour",
        "pools[1].minNodes",
        "pools[1].region",
        "pools[1].onDemandPriceUSDPerHour.g5.xlarge",
    }
    assert problems["pools[0].colour"] == "unknown field"
    assert problems["pools[1].region"] == "required by provider aws-eks-nodegroup"
    assert "in kubetune-system/kubetune-node-pools" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("pools: [1", ""),
        ("[1, 2]", ""),
        ("pools:\n  - {name: a, provider: {type: gcp}}", "pools[0].provider"),
    ],
)
def test_malformed_documents(text: str, path: str) -> None:
    with pytest.raises(PoolConfigError) as caught:
        parse_node_pools(text)
    assert path in dict(caught.value.problems)


def test_duplicate_names() -> None:
    document = yaml.safe_load(GOOD)
    document["pools"][2]["name"] = "gpu-spot"
    with pytest.raises(PoolConfigError) as caught:
        parse_node_pools(yaml.safe_dump(document))
    assert caught.value.problems == [("pools[2].name", "duplicate pool name 'gpu-spot'")]


def test_placement_adds_selector_tolerations_and_the_pool_label() -> None:
    spot = parse_node_pools(GOOD).by_name()["gpu-spot"]
    where = placement(spot)
    assert where == Placement(
        "gpu-spot",
        {"kubetune.dev/node-pool": "gpu-spot"},
        (
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
        ),
    )
    pod = {
        "metadata": {"labels": {"x": "y"}},
        "spec": {
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "true",
                    "effect": "NoSchedule",
                }
            ],
        },
    }
    placed = apply_placement(pod, where)
    assert placed["spec"]["nodeSelector"] == {"disk": "ssd", "kubetune.dev/node-pool": "gpu-spot"}
    assert len(placed["spec"]["tolerations"]) == 2  # the template's equal one is not repeated
    assert placed["metadata"]["labels"] == {"x": "y", LABEL_POOL: "gpu-spot"}
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}  # the input is left alone
    assert node_in_pool(spot, {"kubetune.dev/node-pool": "gpu-spot", "other": "1"})
    assert not node_in_pool(spot, {"kubetune.dev/node-pool": "gpu-od"})


def test_the_pod_builder_places_trial_pods_on_the_pool() -> None:
    spot = parse_node_pools(GOOD).by_name()["gpu-spot"]
    experiment = parse_experiment(
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "HPOExperiment",
            "metadata": {"name": "e"},
            "spec": {
                "objective": {"metric": "loss", "goal": "minimize"},
                "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
                "budget": {"maxTrials": 1},
                "capacity": {"nodePool": "gpu-spot"},
                "trialTemplate": {
                    "spec": {
                        "containers": [
                            {
                                "name": "t",
                                "command": ["python"],
                                "resources": {"limits": {"nvidia.com/gpu": 2}},
                            }
                        ]
                    }
                },
            },
        }
    )
    context = AttemptContext(
        experiment="e",
        trial="e-0",
        attempt=1,
        params={"x": 0.5},
        resume=False,
        endpoint="http://x",
        token="t",
        checkpoint_uri="",
    )
    pod = trial_pod(experiment.spec, "ns", context, "uid", placement=placement(spot))
    assert pod["spec"]["nodeSelector"] == {"kubetune.dev/node-pool": "gpu-spot"}
    assert pod["metadata"]["labels"][LABEL_POOL] == "gpu-spot"
    assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert trial_gpus(experiment.spec) == 2 == pod_gpus(pod)
    assert "nodeSelector" not in trial_pod(experiment.spec, "ns", context, "uid")["spec"]


def test_node_template_tags_for_scale_from_zero() -> None:
    spot = parse_node_pools(GOOD).by_name()["gpu-spot"]
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert node_template_tags(spot) == {
        f"{prefix}/resources/nvidia.com/gpu": "4",
        f"{prefix}/label/kubetune.dev/node-pool": "gpu-spot",
        f"{prefix}/taint/nvidia.com/gpu": "true:NoSchedule",
        f"{prefix}/taint/spot": ":NoExecute",
    }


def test_the_example_configmap_is_valid() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "node-pools.yaml"
    document = yaml.safe_load(path.read_text())
    assert (document["metadata"]["namespace"], document["metadata"]["name"]) == (
        "kubetune-system",
        "kubetune-node-pools",
    )
    pools = parse_node_pools(document["data"]["pools.yaml"]).by_name()
    assert pools["gpu-spot"].provider.type == "aws-asg"
    assert pools["a100-on-demand"].provider.type == "aws-eks-nodegroup"
