"""Scaling decisions (pure): each expected plan is worked out by hand in the comments."""

from __future__ import annotations

from typing import Any

from kubetune.capacity.pools import NodePool
from kubetune.capacity.scaling import GroupState, Instance, PendingPod, PoolNode, Removal, plan


def pool(**overrides: Any) -> NodePool:
    fields: dict[str, Any] = {
        "name": "gpu",
        "provider": {"type": "aws-asg", "autoScalingGroupName": "asg"},
        "region": "us-east-1",
        "instanceTypes": ["g5.12xlarge"],
        "gpusPerNode": 4,
        "minNodes": 0,
        "maxNodes": 3,
        "nodeLabels": {"kubetune.dev/node-pool": "gpu"},
        "scaleDownGraceSeconds": 60,
        **overrides,
    }
    return NodePool.model_validate(fields)


def pods(*gpus: int) -> list[PendingPod]:
    return [PendingPod("ns", f"p{i}", g) for i, g in enumerate(gpus)]


def group(desired: int, *ids: str, **kwargs: Any) -> GroupState:
    return GroupState(desired, instances=[Instance(i, launched_at=0.0) for i in ids], **kwargs)


def node(name: str, used: int = 0, **kwargs: Any) -> PoolNode:
    return PoolNode(name, f"i-{name}", gpus=4, used_gpus=used, busy=used > 0, **kwargs)


def test_a_pool_at_zero_grows_for_waiting_pods() -> None:
    # 1+1+2+3 GPUs, 4 per node, first fit largest first: [3,1] [2,1] -> 2 nodes.
    decided = plan(pool(), group(0), [], pods(1, 1, 2, 3), now=100.0)
    assert decided.desired == 2 and decided.needed == 2 and decided.remove == ()


def test_never_above_max_nor_the_groups_own_max() -> None:
    decided = plan(pool(maxNodes=3), group(0), [], pods(4, 4, 4, 4, 4), now=0.0)
    assert decided.desired == 3 and decided.needed == 5
    assert "maxNodes 3" in decided.reason
    decided = plan(pool(maxNodes=3), group(0, max_size=2), [], pods(4, 4, 4), now=0.0)
    assert decided.desired == 2


def test_free_gpus_of_busy_nodes_and_joining_instances_are_used_first() -> None:
    # a runs 3 of 4 GPUs (1 free); i-b launched, no Node yet (4 free); desired 3 with 2
    # live: one more launching (4 free). Pods 1, 4, 4 fit a, i-b and the launch: no growth.
    nodes = [node("a", used=3)]
    decided = plan(pool(), group(3, "i-a", "i-b"), nodes, pods(1, 4, 4), now=0.0)
    assert decided.desired is None and decided.needed == 3 and decided.remove == ()
    # One more 4-GPU pod needs a fourth node, but maxNodes is 3.
    decided = plan(pool(maxNodes=4), group(3, "i-a", "i-b"), nodes, pods(1, 4, 4, 4), now=0.0)
    assert decided.desired == 4


def test_min_nodes_is_kept_and_reached() -> None:
    assert plan(pool(minNodes=1), group(0), [], [], now=0.0).desired == 1
    idle = [node("a")]
    decided = plan(pool(minNodes=1), group(1, "i-a"), idle, [], now=1000.0, idle_since={"a": 0})
    assert decided.desired is None and decided.remove == ()


def test_idle_nodes_go_only_after_the_grace_period_oldest_first() -> None:
    nodes = [node("a", used=4), node("b"), node("c")]
    g = group(3, "i-a", "i-b", "i-c")
    first = plan(pool(), g, nodes, [], now=100.0)
    assert first.remove == () and first.idle_since == {"b": 100.0, "c": 100.0}
    later = plan(pool(), g, nodes, [], now=150.0, idle_since={"b": 100.0, "c": 80.0})
    # c has been idle 70 s >= 60 s; b only 50 s. a runs a trial: never a candidate.
    assert later.remove == (Removal("i-c", "c"),) and later.desired is None
    end = plan(pool(), g, nodes, [], now=200.0, idle_since={"b": 100.0, "c": 80.0})
    assert end.remove == (Removal("i-c", "c"), Removal("i-b", "b"))


def test_a_busy_node_is_never_removed_even_above_max() -> None:
    # Someone raised the group to 4 with maxNodes 2: only the two idle nodes may go.
    nodes = [node("a", used=1), node("b", used=1), node("c"), node("d")]
    g = group(4, "i-a", "i-b", "i-c", "i-d")
    decided = plan(pool(maxNodes=2), g, nodes, [], now=1000.0, idle_since={"c": 0, "d": 0})
    assert {r.node for r in decided.remove} == {"c", "d"}


def test_a_node_running_something_else_is_busy_too() -> None:
    other = PoolNode("a", "i-a", gpus=4, used_gpus=0, busy=True)
    decided = plan(pool(), group(1, "i-a"), [other], [], now=1e6, idle_since={"a": 0.0})
    assert decided.remove == ()


def test_waiting_pods_keep_an_idle_node_and_reset_its_timer() -> None:
    decided = plan(pool(), group(1, "i-a"), [node("a")], pods(2), now=500.0, idle_since={"a": 0})
    assert decided.remove == () and decided.idle_since == {}


def test_a_node_cordoned_for_removal_is_reused_before_growing() -> None:
    cordoned = PoolNode("a", "i-a", gpus=4, unschedulable=True, cordoned_by_us=True)
    decided = plan(pool(), group(1, "i-a"), [cordoned], pods(4), now=0.0)
    assert decided.desired is None and decided.uncordon == ("a",)


def test_a_cordoned_node_whose_instance_is_gone_is_not_reused() -> None:
    # "a" was cordoned and its instance terminated; its Node lingers while it shuts down.
    # A pod waiting now gets a new node; "a" stays cordoned (uncordoned, the scheduler
    # bound a gang's rank there and lost it with the node: found on the control plane).
    cordoned = PoolNode("a", "i-a", gpus=4, unschedulable=True, cordoned_by_us=True)
    decided = plan(pool(), group(0), [cordoned], pods(4), now=0.0)
    assert decided.desired == 1 and decided.uncordon == ()


def test_a_cordoned_node_is_removed_without_a_second_grace_period() -> None:
    cordoned = PoolNode("a", "i-a", gpus=4, unschedulable=True, cordoned_by_us=True)
    decided = plan(pool(), group(1, "i-a"), [cordoned], [], now=10.0)
    assert decided.remove == (Removal("i-a", "a"),)


def test_launches_no_longer_needed_are_cancelled_but_not_below_live_instances() -> None:
    # desired 3, one instance live (i-a, idle 0 s): lower to 1, and keep i-a for now.
    decided = plan(pool(), group(3, "i-a"), [node("a")], [], now=0.0)
    assert decided.desired == 1 and decided.remove == ()


def test_instances_that_never_join_are_removed_after_the_join_timeout() -> None:
    g = GroupState(1, instances=[Instance("i-x", launched_at=0.0)])
    assert plan(pool(), g, [], [], now=100.0, join_timeout=600).remove == ()
    assert plan(pool(), g, [], [], now=700.0, join_timeout=600).remove == (Removal("i-x", None),)


def test_pods_larger_than_a_node_are_reported_not_scaled_for() -> None:
    decided = plan(pool(), group(0), [], pods(8), now=0.0)
    assert decided.desired is None and decided.unfit == ("ns/p0",)


def test_without_specific_removal_the_pool_shrinks_only_when_all_nodes_are_idle() -> None:
    nodes = [node("a", used=1), node("b")]
    g = group(2, "i-a", "i-b", can_remove_specific=False)
    assert plan(pool(), g, nodes, [], now=1000.0, idle_since={"b": 0}).remove == ()
    idle = [node("a"), node("b")]
    decided = plan(pool(), g, idle, [], now=1000.0, idle_since={"a": 0, "b": 0})
    assert decided.desired == 0 and {r.node for r in decided.remove} == {"a", "b"}


def test_same_inputs_same_plan() -> None:
    args = (pool(), group(1, "i-a"), [node("a")], pods(4, 2, 1), 5.0)
    assert plan(*args) == plan(*args)


def test_idle_nodes_beyond_the_demand_ceiling_go_at_once_the_others_wait() -> None:
    # a busy; b, c, d idle since 100 (grace 60). At 120 none is past its grace period.
    nodes = [node("a", used=4), node("b"), node("c"), node("d")]
    idle = {"b": 100.0, "c": 110.0, "d": 100.0}
    everyone = group(4, "i-a", "i-b", "i-c", "i-d")
    unknown = plan(pool(maxNodes=4), everyone, nodes, [], now=120.0, idle_since=idle)
    assert unknown.remove == ()
    # The trials can still use 2 nodes at once: 4 live - 2 = 2 go now, oldest idle first
    # (b and d at 100, by name), c stays for work that may come back.
    two = plan(pool(maxNodes=4), everyone, nodes, [], 120.0, idle, demand_ceiling=2)
    assert two.remove == (Removal("i-b", "b"), Removal("i-d", "d"))
    assert "beyond the 2 the pool's trials can still use" in two.reason
    # No trial can run again: every idle node goes; the busy one stays.
    none = plan(pool(maxNodes=4), everyone, nodes, [], 120.0, idle, demand_ceiling=0)
    assert {r.node for r in none.remove} == {"b", "c", "d"}
    # A ceiling above what is live changes nothing; minNodes still holds.
    assert plan(pool(maxNodes=4), everyone, nodes, [], 120.0, idle, demand_ceiling=9).remove == ()
    kept = plan(pool(maxNodes=4, minNodes=3), everyone, nodes, [], 120.0, idle, demand_ceiling=0)
    assert len(kept.remove) == 1


def test_the_demand_ceiling_adds_to_grace_removals_and_never_below_itself() -> None:
    # b past its grace (idle since 0), c and d not. Ceiling 2 of 4 live: 2 may go; b is
    # one of them, the oldest of the others the second.
    nodes = [node("a", used=4), node("b"), node("c"), node("d")]
    idle = {"b": 0.0, "c": 110.0, "d": 100.0}
    everyone = group(4, "i-a", "i-b", "i-c", "i-d")
    decided = plan(pool(maxNodes=4), everyone, nodes, [], 120.0, idle, demand_ceiling=2)
    assert decided.remove == (Removal("i-b", "b"), Removal("i-d", "d"))
    # Ceiling 3: one may go, and b (past its grace) is the one.
    decided = plan(pool(maxNodes=4), everyone, nodes, [], 120.0, idle, demand_ceiling=3)
    assert decided.remove == (Removal("i-b", "b"),)
    # A waiting pod takes the first idle node (b): it stays whatever the ceiling says.
    decided = plan(pool(maxNodes=4), everyone, nodes, pods(4), 120.0, idle, demand_ceiling=0)
    assert decided.remove == (Removal("i-d", "d"), Removal("i-c", "c"))


def test_surplus_nodes_wait_the_pools_surplus_grace_when_it_is_set() -> None:
    # b idle since 100: at 120 it has waited 20 s, at 140 40 s (surplusGraceSeconds 30).
    nodes = [node("a", used=4), node("b")]
    both = group(2, "i-a", "i-b")
    warm = pool(maxNodes=4, surplusGraceSeconds=30)
    assert plan(warm, both, nodes, [], 120.0, {"b": 100.0}, demand_ceiling=1).remove == ()
    later = plan(warm, both, nodes, [], 140.0, {"b": 100.0}, demand_ceiling=1)
    assert later.remove == (Removal("i-b", "b"),)


def test_nodes_going_away_are_not_counted_against_the_demand_ceiling() -> None:
    # a runs the last trial but is being reclaimed (its trial will want a node again);
    # b idle for 10 s. Ceiling 1: b is that node, and stays.
    reclaimed = [node("a", used=4, reclaiming=True, unschedulable=True), node("b")]
    both = group(2, "i-a", "i-b")
    decided = plan(pool(maxNodes=4), both, reclaimed, [], 120.0, {"b": 110.0}, demand_ceiling=1)
    assert decided.remove == ()
    # An instance that never joined goes for its join timeout, and counts against the
    # ceiling: with a ceiling of 2 and 3 instances (c never joined), b and a stay.
    nodes = [node("a", used=4), node("b")]
    stuck = GroupState(3, instances=[Instance(i, launched_at=0.0) for i in ("i-a", "i-b", "i-c")])
    decided = plan(pool(maxNodes=4), stuck, nodes, [], 1000.0, {"b": 990.0}, 900.0, 2)
    assert decided.remove == (Removal("i-c", None),)
