"""What spot node pools save: one experiment, on scaled spot nodes vs always-on on-demand.

The same experiment (64 trials, ASHA with minResource 1, maxResource 27, reduction factor 3,
TPE, 8 trials in parallel; one GPU per trial; a 2-D quadratic objective) runs twice on a
virtual clock, driven by kubetune's own engine (`kubetune.engine`), as the operator drives
it on a cluster:

* **spot**: a pool of 1-GPU spot nodes scaled by kubetune's own scaling decisions
  (`kubetune.capacity.scaling.plan`, every 15 s tick, 0..8 nodes, scale-down grace 120 s),
  with what the cloud adds: a new instance takes 120 s to boot and join; a spot price that
  changes every hour (a fraction of the on-demand price drawn in [0.28, 0.42]); and spot
  interruptions, each node reclaimed after an exponential time with a mean of 4 node-hours
  (a pessimistic rate). A reclaimed node's trial resumes from its last checkpoint (trials
  checkpoint every step, so the step being trained is lost) on another node, and the group
  launches a replacement. Its cost is accounted by `kubetune.capacity.cost.Ledger`, per tick,
  at the price of the moment.
* **on-demand**: 8 on-demand nodes, always on, at the on-demand price, from the
  experiment's first decision to its end (the fairest comparison: a real always-on pool
  would also cost before and after), no boot wait, no interruptions.

Trial pods need 20 s to start (image, checkpoint load) and train one step per 60 s.
The same seeds give the same run, bit for bit.

`kubetune.simulate` is the project's virtual-clock driver, but it models neither nodes nor
interruptions, so this file has its own small discrete-event loop around the engine.

The last line is
`RESULT cost_ratio_vs_ondemand=<x> idle_gpu_fraction=<y> scale_down_s=<z>`:
x = spot run's cost / on-demand run's cost; y = the spot pool's GPU-node time with no trial
on it (booting, idle, grace) / all its GPU-node time (from launch to termination); z =
seconds from the experiment's end until the pool is back to zero nodes.

    .venv/bin/python bench/cost.py            # a few seconds
    .venv/bin/python bench/cost.py --quick    # the smoke test's run
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune import samplers
from kubetune.capacity import cost as costs
from kubetune.capacity.pools import NodePool
from kubetune.capacity.scaling import GroupState, Instance, PendingPod, PoolNode, plan
from kubetune.engine import Engine, FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.events import ExitKind
from kubetune.simulate import make_spec
from kubetune.trials import Decision

ON_DEMAND_USD_PER_HOUR = 1.006  # g5.xlarge, us-east-1
EXPERIMENT = ("bench", "cost")


@dataclass(frozen=True)
class Setup:
    trials: int = 64
    parallel: int = 8
    max_nodes: int = 8
    max_resource: int = 27
    step_seconds: float = 60.0
    pod_start_seconds: float = 20.0
    boot_seconds: float = 120.0
    tick_seconds: float = 15.0
    grace_seconds: float = 120.0
    mean_hours_to_reclaim: float = 4.0
    spot_share: tuple[float, float] = (0.28, 0.42)
    seed: int = 7


def objective(params: dict[str, Any], step: int) -> float:
    x, y = float(params["x"]), float(params["y"])
    return (x - 0.3) ** 2 + (y + 0.1) ** 2 + 1.0 / step


@dataclass
class Node:
    name: str
    launched: float
    ready_at: float
    ready: bool = False
    trial: int | None = None  # the trial number running on it
    ended: float | None = None
    busy_since: float | None = None
    busy_seconds: float = 0.0


@dataclass
class Pod:
    trial: int
    attempt: int
    start_step: int
    node: str | None = None


@dataclass
class Outcome:
    cost_usd: float
    makespan: float
    node_seconds: float
    busy_seconds: float
    interruptions: int
    scale_down_s: float
    trials: int
    best: float | None
    ledger_usd: float = 0.0

    @property
    def idle_fraction(self) -> float:
        return 1.0 - self.busy_seconds / self.node_seconds if self.node_seconds else 0.0


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class Run:
    """One experiment on one kind of capacity, on a virtual clock."""

    def __init__(self, setup: Setup, spot: bool) -> None:
        self.setup = setup
        self.spot = spot
        self.rng = random.Random(setup.seed)
        self.spec = make_spec(
            [
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
            ],
            algorithm={"name": "tpe", "seed": setup.seed},
            scheduler={
                "name": "asha",
                "resource": "epoch",
                "minResource": 1,
                "maxResource": setup.max_resource,
                "reductionFactor": 3,
            },
            budget={"maxTrials": setup.trials, "parallelTrials": setup.parallel},
        )
        self.pool = NodePool.model_validate(
            {
                "name": "gpu-spot",
                "provider": {"type": "aws-asg", "autoScalingGroupName": "bench"},
                "region": "us-east-1",
                "instanceTypes": ["g5.xlarge"],
                "gpusPerNode": 1,
                "minNodes": 0,
                "maxNodes": setup.max_nodes,
                "nodeLabels": {"kubetune.dev/node-pool": "gpu-spot"},
                "scaleDownGraceSeconds": setup.grace_seconds,
                "onDemandPriceUSDPerHour": {"g5.xlarge": ON_DEMAND_USD_PER_HOUR},
            }
        )
        self.engine = Engine(self.spec, "cost")
        self.queue: list[_Event] = []
        self.seq = itertools.count()
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.gone: list[Node] = []
        self.names = itertools.count()
        self.desired = 0
        self.pods: dict[int, Pod] = {}
        self.pending: list[int] = []  # trial numbers, in launch order
        self.checkpoints: dict[int, int] = {}
        self.idle_since: dict[str, float] = {}
        self.finished_at: float | None = None
        self.empty_at: float | None = None
        self.interruptions = 0
        self.ledger = costs.Ledger()
        self.last_tick = 0.0
        self.prices: dict[int, float] = {}

    # ----- the clock ------------------------------------------------------------------

    def at(self, time: float, kind: str, data: Any = None) -> None:
        heapq.heappush(self.queue, _Event(time, next(self.seq), kind, data))

    def price(self, time: float) -> float:
        """USD per node-hour at `time`: hourly spot prices, or the on-demand price."""
        if not self.spot:
            return ON_DEMAND_USD_PER_HOUR
        hour = int(time // 3600)
        if hour not in self.prices:
            low, high = self.setup.spot_share
            draw = random.Random(self.setup.seed * 100_003 + hour).uniform(low, high)
            self.prices[hour] = ON_DEMAND_USD_PER_HOUR * draw
        return self.prices[hour]

    # ----- nodes ----------------------------------------------------------------------

    def launch_node(self, boot: float) -> None:
        node = Node(f"node-{next(self.names)}", self.now, self.now + boot)
        self.nodes[node.name] = node
        self.at(node.ready_at, "ready", node.name)
        if self.spot:
            hours = self.rng.expovariate(1.0 / self.setup.mean_hours_to_reclaim)
            self.at(self.now + hours * 3600, "reclaim", node.name)

    def remove_node(self, name: str) -> Node:
        node = self.nodes.pop(name)
        node.ended = self.now
        self.gone.append(node)
        self.idle_since.pop(name, None)
        return node

    def free(self, node: Node) -> None:
        if node.busy_since is not None:
            node.busy_seconds += self.now - node.busy_since
        node.trial, node.busy_since = None, None

    def place(self) -> None:
        for node in self.nodes.values():
            if not self.pending:
                return
            if node.ready and node.trial is None:
                number = self.pending.pop(0)
                pod = self.pods[number]
                pod.node, node.trial, node.busy_since = node.name, number, self.now
                self.at(
                    self.now + self.setup.pod_start_seconds + self.setup.step_seconds,
                    "step",
                    (number, pod.attempt, pod.start_step),
                )

    def tick(self) -> None:
        live = list(self.nodes.values())
        group = GroupState(self.desired, 0, self.setup.max_nodes, [Instance(n.name) for n in live])
        observed = [
            PoolNode(n.name, n.name, 1, int(n.trial is not None), n.trial is not None, n.ready)
            for n in live
            if n.ready
        ]
        waiting = [PendingPod("bench", f"trial-{t}", 1) for t in self.pending]
        decided = plan(self.pool, group, observed, waiting, self.now, self.idle_since)
        self.idle_since = dict(decided.idle_since)
        if decided.desired is not None and decided.desired > self.desired:
            for _ in range(decided.desired - len(self.nodes)):
                self.launch_node(self.setup.boot_seconds)
            self.desired = decided.desired
        for removal in decided.remove:
            node = self.nodes.get(removal.instance_id)
            if node is not None and node.trial is None:  # never a busy one
                self.remove_node(node.name)
                self.desired -= 1
        self.account()
        if self.finished_at is not None and not self.nodes and self.empty_at is None:
            self.empty_at = self.now

    def account(self) -> None:
        if self.now <= self.last_tick:
            return
        price = self.price(self.last_tick)
        spans = [
            costs.NodeSpan(n.name, "gpu-spot", n.launched, n.ended, price)
            for n in [*self.nodes.values(), *self.gone]
            if n.ended is None or n.ended > self.last_tick
        ]
        usage = [
            costs.UsageSpan(EXPERIMENT, "gpu-spot", 1, n.busy_since, None)
            for n in self.nodes.values()
            if n.busy_since is not None
        ]
        waiting = {"gpu-spot": {EXPERIMENT: len(self.pending)}} if self.pending else {}
        self.ledger.advance(self.last_tick, self.now, spans, usage, waiting, {"gpu-spot": 0})
        self.last_tick = self.now

    # ----- the engine's side ----------------------------------------------------------

    def decide(self) -> None:
        while self.finished_at is None:
            changed = False
            for action in self.engine.decide(self.now):
                changed |= self.carry_out(action)
            if not changed:
                break
        self.place()

    def carry_out(self, action: Any) -> bool:
        match action:
            case SampleTrial(number=number):
                suggestion = samplers.suggest(*self.engine.sampler_request(number))
                self.engine.record_suggestion(number, suggestion)
                return True
            case LaunchTrial(number=number, attempt=attempt, resume=resume):
                start = self.checkpoints.get(number, 0) + 1 if resume else 1
                self.pods[number] = Pod(number, attempt, start)
                self.pending.append(number)
            case StopTrial(number=number, attempt=attempt):
                pod = self.pods.get(number)
                if pod is not None and pod.attempt == attempt:
                    self.end_pod(pod, ExitKind.EXITED)
                    return True
            case FinishExperiment():
                self.finished_at = self.now
        return False

    def end_pod(self, pod: Pod, kind: ExitKind, message: str = "") -> None:
        del self.pods[pod.trial]
        if pod.node is None:
            self.pending.remove(pod.trial)
        elif pod.node in self.nodes:
            self.free(self.nodes[pod.node])
        code = 0 if kind is ExitKind.EXITED else None
        self.engine.attempt_ended(pod.trial, pod.attempt, kind, code, self.now, message)

    def on_step(self, number: int, attempt: int, step: int) -> None:
        pod = self.pods.get(number)
        if pod is None or pod.attempt != attempt:
            return  # stopped or interrupted while this step trained
        params = self.engine.trials[number].params
        verdict = self.engine.report(
            number, attempt, step, {"loss": objective(params, step)}, self.now
        )
        self.checkpoints[number] = step  # trials checkpoint every step
        if verdict.decision is Decision.CONTINUE and step < self.setup.max_resource:
            self.at(self.now + self.setup.step_seconds, "step", (number, attempt, step + 1))
        else:
            self.end_pod(pod, ExitKind.EXITED)
        self.decide()

    def on_reclaim(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return  # already terminated by scale-down
        self.interruptions += 1
        number = node.trial
        self.free(node)
        self.remove_node(name)
        if number is not None:
            self.end_pod(self.pods[number], ExitKind.INTERRUPTED, "spot node reclaimed")
        self.launch_node(self.setup.boot_seconds)  # the group replaces it
        self.decide()

    # ----- running --------------------------------------------------------------------

    def run(self) -> Outcome:
        if not self.spot:  # always on: every node up before the experiment starts
            for _ in range(self.setup.max_nodes):
                self.launch_node(0.0)
            for node in self.nodes.values():
                node.ready = True
            self.queue.clear()
            self.desired = self.setup.max_nodes
        self.decide()
        if self.spot:
            self.at(self.setup.tick_seconds, "tick")
        while self.queue:
            event = heapq.heappop(self.queue)
            self.now = event.time
            if event.kind == "tick":
                self.tick()
                if self.finished_at is None or self.nodes:
                    self.at(self.now + self.setup.tick_seconds, "tick")
            elif event.kind == "ready":
                if event.data in self.nodes:
                    self.nodes[event.data].ready = True
                    self.place()
            elif event.kind == "step":
                self.on_step(*event.data)
            elif event.kind == "reclaim" and event.data in self.nodes:
                self.on_reclaim(event.data)
            if self.finished_at is not None and not self.spot:
                break
        if self.finished_at is None:
            raise RuntimeError(f"the experiment did not finish: {self.engine.counts()}")
        return self.outcome()

    def outcome(self) -> Outcome:
        end = self.now if self.spot else self.finished_at
        assert end is not None and self.finished_at is not None
        for node in list(self.nodes.values()):
            self.free(node)
            self.remove_node(node.name)
            node.ended = end
        node_seconds = sum((n.ended or end) - n.launched for n in self.gone)
        busy = sum(n.busy_seconds for n in self.gone)
        if self.spot:
            cost = sum(self._node_cost(n) for n in self.gone)
        else:
            cost = node_seconds * ON_DEMAND_USD_PER_HOUR / 3600
        best = self.engine.best()
        started = self.engine.started_at or 0.0
        return Outcome(
            cost_usd=cost,
            makespan=self.finished_at - started,
            node_seconds=node_seconds,
            busy_seconds=busy,
            interruptions=self.interruptions,
            scale_down_s=(self.empty_at - self.finished_at) if self.empty_at is not None else 0.0,
            trials=len(self.engine.trials),
            best=best.value if best else None,
            ledger_usd=self.ledger.experiments.get(EXPERIMENT, 0.0),
        )

    def _node_cost(self, node: Node) -> float:
        """Exactly: the node's life, cut at the hours where the spot price changes."""
        start, end, total = node.launched, node.ended or node.launched, 0.0
        while start < end:
            edge = min(end, (math.floor(start / 3600) + 1) * 3600)
            total += (edge - start) * self.price(start) / 3600
            start = edge
        return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 trials, 4 GPUs: the smoke test")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    setup = Setup(seed=args.seed)
    if args.quick:
        setup = Setup(trials=16, parallel=4, max_nodes=4, max_resource=9, seed=args.seed)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spot = Run(setup, spot=True).run()
    on_demand = Run(setup, spot=False).run()
    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("trials", lambda o: f"{o.trials}"),
        ("best loss", lambda o: f"{o.best:.4f}" if o.best is not None else "-"),
        ("makespan (h)", lambda o: f"{o.makespan / 3600:.2f}"),
        ("GPU-node hours", lambda o: f"{o.node_seconds / 3600:.2f}"),
        ("trial GPU hours", lambda o: f"{o.busy_seconds / 3600:.2f}"),
        ("idle GPU fraction", lambda o: f"{o.idle_fraction:.3f}"),
        ("interruptions", lambda o: f"{o.interruptions}"),
        ("cost (USD)", lambda o: f"{o.cost_usd:.2f}"),
    ]
    print(
        f"{setup.trials} trials, ASHA 1..{setup.max_resource} (eta 3), {setup.parallel} in "
        f"parallel, up to {setup.max_nodes} 1-GPU nodes; seed {setup.seed}"
    )
    print(f"{'':20} {'spot, scaled':>14} {'on-demand, always on':>22}")
    for label, cell in rows:
        print(f"{label:20} {cell(spot):>14} {cell(on_demand):>22}")
    print(
        f"spot: ledger (per-tick attribution) ${spot.ledger_usd:.2f} vs exact "
        f"${spot.cost_usd:.2f}; pool back to 0 nodes {spot.scale_down_s:.0f}s after the "
        "experiment ended"
    )
    ratio = spot.cost_usd / on_demand.cost_usd
    print(
        f"RESULT cost_ratio_vs_ondemand={ratio:.4f} idle_gpu_fraction={spot.idle_fraction:.4f} "
        f"scale_down_s={spot.scale_down_s:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
