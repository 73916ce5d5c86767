"""Gangs on a node pool, pure: admission of a whole gang (capacity/gangs.py), the
release of a gang placed in part for too long (operator/gang.py `PartialGangs`), and the
price of a distributed trial (every pod's GPUs)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubetune.capacity.accounting import CostBook
from kubetune.capacity.gangs import RESERVATION_SECONDS, GangAdmission, admission, held_gpus
from kubetune.capacity.pools import NodePool
from kubetune.operator.gang import PartialGangs
from kubetune.spec import parse_experiment
from tests.distributed.test_operator_gang_units import SPEC

POOL = NodePool.model_validate(
    {
        "name": "gpu",
        "provider": {"type": "aws-asg", "autoScalingGroupName": "g"},
        "region": "us-east-1",
        "instanceTypes": ["g5.xlarge"],
        "gpusPerNode": 1,
        "maxNodes": 4,
        "capacityType": "on-demand",
        "nodeLabels": {"kubetune.dev/node-pool": "gpu"},
        "onDemandPriceUSDPerHour": {"g5.xlarge": 36.0},
    }
)


def pod(trial: str, attempt: int, phase: str = "Pending", pool: str = "gpu") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team",
            "name": f"{trial}-a{attempt}-r0",
            "labels": {
                "kubetune.dev/node-pool": pool,
                "kubetune.dev/trial": trial,
                "kubetune.dev/attempt": str(attempt),
            },
        },
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": phase},
    }


def test_a_gang_waits_whole_when_the_pool_cannot_hold_it() -> None:
    assert admission(4, 2, 2) is None
    assert "hold or wait for 3 of the pool's 4" in (admission(4, 3, 2) or "")
    assert "can never have more than 4" in (admission(4, 0, 6) or "")


def test_three_two_pod_gangs_on_four_nodes_two_go_and_the_third_waits() -> None:
    gangs = GangAdmission()
    gangs.observed({"gpu": POOL}, {"gpu": []}, [], now=0.0)
    assert gangs.admit("gpu", ("team", "t-0", "1"), 2, 1.0) is None
    assert gangs.admit("gpu", ("team", "t-1", "1"), 2, 1.0) is None
    assert gangs.admit("gpu", ("team", "t-2", "1"), 2, 1.0) is not None
    # Asking again before anything changed: still waits; the admitted ones are counted.
    assert gangs.admit("gpu", ("team", "t-2", "1"), 2, 2.0) is not None
    assert gangs.admit("gpu", ("team", "t-0", "1"), 2, 2.0) is None  # already counted
    # A tick lists the two gangs' pods (two each), running.
    pods = [pod("t-0", 1, "Running"), pod("t-0", 1, "Running")]
    pods += [pod("t-1", 1, "Running"), pod("t-1", 1, "Running")]
    gangs.observed({"gpu": POOL}, {"gpu": []}, pods, now=3.0)
    assert not gangs.reserved
    assert gangs.admit("gpu", ("team", "t-2", "1"), 2, 4.0) is not None
    # One gang done (its pods Succeeded): the third fits.
    pods[0]["status"]["phase"] = pods[1]["status"]["phase"] = "Succeeded"
    gangs.observed({"gpu": POOL}, {"gpu": []}, pods, now=5.0)
    assert gangs.admit("gpu", ("team", "t-2", "1"), 2, 6.0) is None


def test_no_tick_yet_means_wait_and_reservations_expire() -> None:
    gangs = GangAdmission()
    assert "not listed" in (gangs.admit("gpu", ("team", "t-0", "1"), 2, 0.0) or "")
    gangs.observed({"gpu": POOL}, {"gpu": []}, [], now=0.0)
    assert gangs.admit("gpu", ("team", "t-0", "1"), 4, 1.0) is None
    assert gangs.admit("gpu", ("team", "t-1", "1"), 1, 1.0) is not None
    # Its pods never showed up (the launch failed): the reservation lapses.
    gangs.observed({"gpu": POOL}, {"gpu": []}, [], now=2.0 + RESERVATION_SECONDS)
    assert gangs.admit("gpu", ("team", "t-1", "1"), 1, 3.0 + RESERVATION_SECONDS) is None


def test_held_gpus_count_waiting_and_terminating_pods_of_the_pool_only() -> None:
    pods = [pod("a", 1), pod("a", 1, "Running"), pod("b", 2, "Failed"), pod("c", 1, pool="other")]
    assert held_gpus("gpu", pods) == {("team", "a", "1"): 2}


def test_a_gang_placed_in_part_is_released_after_the_timeout() -> None:
    partial = PartialGangs()
    partial.pod_seen(3, 1, 0, 2, bound=True, over=False, now=10.0)
    partial.pod_seen(3, 1, 1, 2, bound=False, over=False, now=10.5)
    assert partial.overdue(100.0, 300.0) == []
    assert partial.overdue(310.0, 300.0) == [(3, 1, [1])]
    # Placed whole before the timeout: nothing to release.
    partial.pod_seen(3, 1, 1, 2, bound=True, over=False, now=200.0)
    assert partial.overdue(400.0, 300.0) == []
    # A gang none of whose ranks is placed holds nothing: it waits whole, no timeout.
    partial.pod_seen(4, 1, 0, 2, bound=False, over=False, now=0.0)
    partial.pod_seen(4, 1, 1, 2, bound=False, over=False, now=0.0)
    assert partial.overdue(1000.0, 300.0) == []
    # An attempt that ended is forgotten.
    partial.pod_seen(5, 1, 0, 2, bound=True, over=False, now=0.0)
    partial.pod_seen(5, 1, 0, 2, bound=True, over=True, now=1.0)
    assert partial.overdue(1000.0, 300.0) == []


def gang_spec(workers: int) -> Any:
    """The units' 3-worker experiment (1 GPU per pod) on pool `gpu`, with `workers`."""
    document = copy.deepcopy(SPEC)
    document["spec"].update(workers=workers, capacity={"nodePool": "gpu"})
    return parse_experiment(document).spec


def test_a_distributed_trial_costs_every_pod() -> None:
    assert CostBook(None).trial_price({"gpu": POOL}, gang_spec(3)) == pytest.approx(3 * 36.0)


def test_a_gang_larger_than_its_pool_can_ever_be_is_refused() -> None:
    from kubetune.capacity.manager import CapacityManager

    manager = CapacityManager(core=None, controllers=dict)  # type: ignore[arg-type]
    manager.pools = {"gpu": POOL}
    assert manager.check_workers(gang_spec(4)) is None
    why = manager.check_workers(gang_spec(5))
    assert why is not None and "maxNodes 4 x gpusPerNode 1 = 4" in why, why
