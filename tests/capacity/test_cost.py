"""Prices and attribution of cost to experiments (pure), against hand computation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubetune.capacity.accounting import CostBook
from kubetune.capacity.cost import (
    INSTANCE_TYPE_LABEL,
    ZONE_LABEL,
    Ledger,
    NodeSpan,
    SpotPrice,
    UsageSpan,
    attribute_window,
    latest_spot_prices,
    node_price,
    trial_usd_per_hour,
)
from kubetune.capacity.pools import NodePool

A, B = ("ns", "a"), ("ns", "b")


def pool(**overrides: Any) -> NodePool:
    fields: dict[str, Any] = {
        "name": "gpu",
        "provider": {"type": "none"},
        "instanceTypes": ["g5.xlarge", "g5.2xlarge"],
        "gpusPerNode": 1,
        "maxNodes": 4,
        "nodeLabels": {"pool": "gpu"},
        "onDemandPriceUSDPerHour": {"g5.xlarge": 1.0, "g5.2xlarge": 1.2},
        **overrides,
    }
    return NodePool.model_validate(fields)


def test_latest_spot_price_per_type_and_zone() -> None:
    history = [
        SpotPrice("g5.xlarge", "us-east-1a", 0.40, at=10),
        SpotPrice("g5.xlarge", "us-east-1a", 0.35, at=20),
        SpotPrice("g5.xlarge", "us-east-1b", 0.50, at=5),
    ]
    assert latest_spot_prices(history) == {
        ("g5.xlarge", "us-east-1a"): 0.35,
        ("g5.xlarge", "us-east-1b"): 0.50,
    }


def test_node_price_spot_on_demand_and_unknown() -> None:
    spot = {("g5.xlarge", "us-east-1a"): 0.35, ("g5.xlarge", "us-east-1b"): 0.50}
    labels = {INSTANCE_TYPE_LABEL: "g5.xlarge", ZONE_LABEL: "us-east-1a"}
    assert node_price(pool(), labels, spot) == 0.35
    # No zone: the dearest zone (budgets err on the safe side).
    assert node_price(pool(), {INSTANCE_TYPE_LABEL: "g5.xlarge"}, spot) == 0.50
    # No spot price for the type: the on-demand price is the fallback.
    assert node_price(pool(), {INSTANCE_TYPE_LABEL: "g5.2xlarge"}, spot) == 1.2
    # A node labelled on-demand in a spot pool pays on-demand.
    on_demand = {**labels, "karpenter.sh/capacity-type": "on-demand"}
    assert node_price(pool(), on_demand, spot) == 1.0
    assert node_price(pool(), {}, spot) is None  # two types, no label: unknown
    one_type = pool(instanceTypes=["g5.xlarge"], onDemandPriceUSDPerHour={"g5.xlarge": 1.0})
    assert node_price(one_type, {}, {}) == 1.0


def test_a_window_is_split_by_gpu_seconds() -> None:
    # Window [0, 100]. Node n1 ($3.60/h = $0.001/s) runs all of it: $0.10. Node n2
    # ($7.20/h) starts at 50: 50 s * $0.002 = $0.10. Pool: $0.20.
    # A: 1 GPU for 0..100 = 100 GPU-s; B: 2 GPUs for 50..100 = 100 GPU-s -> $0.10 each.
    nodes = [NodeSpan("n1", "gpu", 0, None, 3.6), NodeSpan("n2", "gpu", 50, None, 7.2)]
    usage = [UsageSpan(A, "gpu", 1, -20, None), UsageSpan(B, "gpu", 2, 50, 120)]
    window = attribute_window(0, 100, nodes, usage)
    assert window.pool_usd["gpu"] == pytest.approx(0.20)
    assert window.experiment_usd == pytest.approx({A: 0.10, B: 0.10})
    assert window.unattributed_usd == {}


def test_an_idle_window_goes_to_waiting_pods_then_to_the_last_users_above_the_floor() -> None:
    nodes = [NodeSpan("n1", "gpu", 0, 60, 3.6)]  # 60 s at $0.001/s = $0.06
    waiting = {"gpu": {A: 1, B: 3}}
    assert attribute_window(0, 100, nodes, [], waiting).experiment_usd == pytest.approx(
        {A: 0.015, B: 0.045}
    )
    recent = {"gpu": {B: 5.0}}
    assert attribute_window(0, 100, nodes, [], None, recent).experiment_usd == pytest.approx(
        {B: 0.06}
    )
    # minNodes 1: the one idle node is the pool's floor, nobody's.
    floor = attribute_window(0, 100, nodes, [], None, recent, {"gpu": 1})
    assert floor.experiment_usd == {} and floor.unattributed_usd == pytest.approx({"gpu": 0.06})
    assert attribute_window(0, 100, nodes, []).unattributed_usd == pytest.approx({"gpu": 0.06})


def test_ledger_scripted_scenario() -> None:
    """Node n1 at $36/h ($0.01/s) joins at t=0 for A's waiting pod; A's trial runs 10..70;
    B's 1-GPU trial runs 40..70 on n2 ($0.01/s), which joined at 30; both nodes idle from
    70; n2 is removed at 100; n1 stays (minNodes 1) until 200.

    Windows of 10 s each. By hand:
    * 0..10: n1 $0.10, nobody runs, A waits -> A $0.10.
    * 10..30: n1 $0.20, A runs -> A $0.20.
    * 30..40: n1+n2 $0.20, A runs alone -> A $0.20.
    * 40..70: $0.60, A and B 1 GPU each -> A $0.30, B $0.30.
    * 70..100: $0.60, idle, two nodes above a floor of one: half ($0.30) to the last users
      A and B (equal GPU-seconds), $0.15 each; $0.30 nobody's.
    * 100..200: n1 alone, the floor: $1.00 nobody's.
    A = 0.10 + 0.20 + 0.20 + 0.30 + 0.15 = $0.95; B = 0.30 + 0.15 = $0.45.
    """
    ledger = Ledger()
    ledger.seed(A, 0.0)
    nodes = [NodeSpan("n1", "gpu", 0, None, 36.0), NodeSpan("n2", "gpu", 30, 100, 36.0)]
    usage = [UsageSpan(A, "gpu", 1, 10, 70), UsageSpan(B, "gpu", 1, 40, 70)]
    for t0 in range(0, 200, 10):
        waiting = {"gpu": {A: 1}} if t0 < 10 else {}
        ledger.advance(t0, t0 + 10, nodes, usage, waiting, {"gpu": 1})
    assert ledger.experiments == pytest.approx({A: 0.95, B: 0.45})
    assert ledger.pools["gpu"] == pytest.approx(2.0 + 0.7)  # n1 200 s + n2 70 s
    assert ledger.unattributed["gpu"] == pytest.approx(1.30)


def test_ledger_starts_from_the_stored_cost() -> None:
    ledger = Ledger()
    ledger.seed(A, 2.5)
    ledger.seed(A, 9.9)  # seeded once: later seeds do not reset the running total
    ledger.advance(0, 10, [NodeSpan("n", "gpu", 0, None, 36.0)], [], {"gpu": {A: 1}})
    assert ledger.experiments[A] == pytest.approx(2.6)


def test_a_newly_seen_node_is_counted_from_its_stamp_a_second_back_at_most() -> None:
    """A Node stamped 100.0 (whole seconds) is not in the list of the tick at 100.6 (made
    after the list) and first seen at 101.7: its 0.6 s before that window was in no window
    (CI's cost test read 1.2 s short for two such nodes). Counted back at most a second:
    a node there long before was not the pool's then. A node already there at this
    operator's first tick is not counted back: `_unseen_cost` prices that time."""
    gpu = pool(instanceTypes=["g5.xlarge"], onDemandPriceUSDPerHour={"g5.xlarge": 36.0})
    book = CostBook(None)

    def node(name: str, stamp: str) -> dict[str, Any]:
        labels = {"pool": "gpu"}
        return {"metadata": {"name": name, "creationTimestamp": stamp, "labels": labels}}

    old, fresh = node("old", "2026-12-06T00:00:00Z"), node("fresh", "2026-12-06T00:01:40Z")
    # A node created an hour ago and labelled into the pool now: its hour was not the pool's.
    joined = node("joined", "2026-12-05T23:00:00Z")
    base = 1796515200.0  # 2026-12-06T00:00:00Z
    ticks = [(100.6, [old]), (101.7, [old, fresh]), (102.7, [old, fresh, joined])]
    # Then `old` leaves the pool for one tick and comes back: accounted up to the tick
    # that missed it, and not counted back into that time when it returns.
    ticks += [(103.7, [fresh, joined]), (104.7, [old, fresh, joined])]
    for now, nodes in ticks:
        asyncio.run(book.account({"gpu": gpu}, base + now, nodes, []))
    # old: 100.6..103.7 and 103.7..104.7 (before 100.6: the first sight's); fresh:
    # 100.0..104.7; joined: one second before the window that first saw it, 100.7..104.7.
    assert book.ledger.pools["gpu"] == pytest.approx((4.1 + 4.7 + 4.0) / 100, abs=1e-6)


def test_trial_price_is_its_gpu_share_of_a_node() -> None:
    assert trial_usd_per_hour(4.0, 4, 1) == 1.0
    assert trial_usd_per_hour(4.0, 4, 4) == 4.0
    assert trial_usd_per_hour(4.0, 4, 0) == 1.0
