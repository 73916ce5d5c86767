"""`demand.pool_ceilings` (pure): the most nodes each pool's experiments can still use."""

from __future__ import annotations

from typing import Any

from kubetune.capacity.demand import pool_ceilings
from kubetune.capacity.pools import NodePool
from kubetune.simulate import make_spec
from kubetune.spec import ExperimentSpec


def pool(name: str, grace: float = 60.0) -> NodePool:
    return NodePool.model_validate(
        {
            "name": name,
            "provider": {"type": "aws-asg", "autoScalingGroupName": name},
            "region": "us-east-1",
            "instanceTypes": ["g5.xlarge"],
            "gpusPerNode": 1,
            "maxNodes": 8,
            "nodeLabels": {"kubetune.dev/node-pool": name},
            "scaleDownGraceSeconds": grace,
        }
    )


def spec(pool_name: str | None, workers: int = 1) -> ExperimentSpec:
    made = make_spec(
        [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}], budget={"maxTrials": 4}
    )
    update: dict[str, Any] = {"workers": workers}
    if pool_name is not None:
        update["capacity"] = made.model_validate(
            {**made.model_dump(), "capacity": {"nodePool": pool_name}}
        ).capacity
    return made.model_copy(update=update)


POOLS = {"a": pool("a"), "b": pool("b"), "slow": pool("slow", grace=600.0)}


def keyed(*experiments: tuple[ExperimentSpec, int | None]) -> dict[Any, Any]:
    return {("ns", f"e{i}"): experiment for i, experiment in enumerate(experiments)}


def test_pods_of_every_experiment_on_a_pool_add_up() -> None:
    experiments = keyed((spec("a"), 3), (spec("a", workers=2), 2), (spec("b"), 0), (spec(None), 5))
    pods = [("a", ("ns", "e0")), ("a", ("ns", "e1"))]
    ceilings = pool_ceilings(POOLS, experiments, pods, running_for=60.0)
    assert ceilings == {"a": 7, "b": 0, "slow": 0}


def test_one_experiment_that_cannot_say_leaves_its_pool_unknown() -> None:
    experiments = keyed((spec("a"), 3), (spec("a"), None), (spec("b"), 1))
    ceilings = pool_ceilings(POOLS, experiments, [], running_for=60.0)
    assert ceilings == {"a": None, "b": 1, "slow": 0}


def test_a_pod_of_an_experiment_not_held_leaves_its_pool_unknown() -> None:
    # Another namespace's operator's, or one not delivered yet, or one being deleted:
    # nothing says what its trials will still want.
    experiments = keyed((spec("a"), 1))
    pods = [("a", ("ns", "e0")), ("b", ("other", "e0")), ("elsewhere", ("x", "y"))]
    ceilings = pool_ceilings(POOLS, experiments, pods, running_for=60.0)
    assert ceilings == {"a": 1, "b": None, "slow": 0}


def test_unknown_until_the_loop_has_settled_or_run_for_the_pools_grace_period() -> None:
    assert pool_ceilings(POOLS, {}, [], running_for=59.0) == {"a": None, "b": None, "slow": None}
    # 60 s: the grace of a and b, and the loop's settling time (slow's grace is 600 s).
    assert pool_ceilings(POOLS, {}, [], running_for=60.0) == {"a": 0, "b": 0, "slow": 0}
    assert pool_ceilings(POOLS, {}, [], 20.0, settle=20.0) == {"a": 0, "b": 0, "slow": 0}
    # An experiment on a pool that is not configured changes nothing.
    assert pool_ceilings(POOLS, keyed((spec("gone"), 2)), [], running_for=600.0)["a"] == 0
