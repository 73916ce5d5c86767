"""The README's kind walkthrough schedules the example's trial pods: kind-config.yaml's
worker carries the example gpu-spot pool's node labels and taints
(manifests/examples/node-pools.yaml), and the example experiment's trial pod, as the
operator builds it with and without that pool's placement, fits the worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubetune.capacity.pools import LABEL_POOL, NodePool, node_in_pool, parse_node_pools, placement
from kubetune.operator.pods import trial_pod
from kubetune.spec import load_experiment
from kubetune.trialenv import AttemptContext

REPO = Path(__file__).resolve().parents[2]
POOL = "gpu-spot"


def kind_worker() -> tuple[dict[str, str], list[dict[str, str]]]:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    (worker,) = [node for node in config["nodes"] if node["role"] == "worker"]
    taints = []
    for patch in map(yaml.safe_load, worker.get("kubeadmConfigPatches", [])):
        if patch["kind"] == "JoinConfiguration":
            taints += patch["nodeRegistration"].get("taints", [])
    return worker.get("labels", {}), taints


def example_pool() -> NodePool:
    config_map = yaml.safe_load((REPO / "manifests" / "examples" / "node-pools.yaml").read_text())
    return parse_node_pools(config_map["data"]["pools.yaml"]).by_name()[POOL]


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, str]) -> bool:
    """Kubernetes' rule: same key (or an empty key with Exists), same effect (or none),
    and the same value unless the operator is Exists."""
    for toleration in tolerations:
        exists = toleration.get("operator", "Equal") == "Exists"
        if toleration.get("key", "") not in ("", taint["key"]) or (
            not toleration.get("key") and not exists
        ):
            continue
        if toleration.get("effect") not in (None, "", taint["effect"]):
            continue
        if exists or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def schedulable(
    pod: Mapping[str, Any], labels: Mapping[str, str], taints: list[dict[str, str]]
) -> tuple[dict[str, str], list[dict[str, str]]]:
    spec = pod["spec"]
    selector = spec.get("nodeSelector") or {}
    assert spec.get("affinity") is None, "the check covers nodeSelector, not affinity"
    wrong = {k: v for k, v in selector.items() if labels.get(k) != v}
    untolerated = [
        t
        for t in taints
        if t["effect"] in ("NoSchedule", "NoExecute")
        and not tolerates(spec.get("tolerations") or [], t)
    ]
    return wrong, untolerated


def test_the_kind_worker_is_a_node_of_the_example_pool() -> None:
    labels, taints = kind_worker()
    pool = example_pool()
    assert LABEL_POOL in pool.nodeLabels, "the pool is selected by the label capacity uses"
    assert {k: labels.get(k) for k in pool.nodeLabels} == dict(pool.nodeLabels)
    assert node_in_pool(pool, labels)
    assert labels.get("node.kubernetes.io/instance-type") in pool.instanceTypes
    pool_taints = [t.model_dump(exclude_none=True) for t in pool.taints]
    assert sorted(map(sorted_items, taints)) == sorted(map(sorted_items, pool_taints))


def sorted_items(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))


def test_the_example_trial_pods_fit_the_kind_worker() -> None:
    labels, taints = kind_worker()
    experiment = load_experiment(REPO / "manifests" / "examples" / "digits-asha.yaml")
    context = AttemptContext(
        experiment=experiment.name,
        trial=f"{experiment.name}-0",
        attempt=1,
        params={"lr": 0.01, "hidden": 64, "optimizer": "adam", "momentum": None},
        resume=False,
        endpoint="http://kubetune-operator.kubetune-system:8080",
        token="t",
        checkpoint_uri="s3://b/p",
    )
    as_written = trial_pod(experiment.spec, "team", context, "uid")
    on_the_pool = trial_pod(
        experiment.spec, "team", context, "uid", placement=placement(example_pool())
    )
    for pod in (as_written, on_the_pool):
        assert schedulable(pod, labels, taints) == ({}, [])


def test_the_toleration_rule() -> None:
    gpu = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    assert tolerates([{"key": "nvidia.com/gpu", "operator": "Exists"}], gpu)
    assert tolerates([{"operator": "Exists"}], gpu)
    assert tolerates([{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}], gpu)
    assert not tolerates([{"key": "nvidia.com/gpu", "value": "false"}], gpu)
    assert not tolerates(
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], gpu
    )
    assert not tolerates([{"key": "other", "operator": "Exists"}], gpu)
    assert not tolerates([], gpu)
