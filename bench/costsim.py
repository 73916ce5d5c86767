"""One experiment on one kind of GPU capacity, on a virtual clock (bench/cost.py's model).

kubetune's own engine (`kubetune.engine`) decides, as the operator would; this file plays
the cloud and the cluster around it:

* **Nodes**: 1-GPU nodes. A new one boots and joins in `boot_seconds`. A trial of
  `workers` pods (a gang) is placed only when `workers` free, ready, untainted nodes
  exist (all or nothing), and ends, is interrupted and resumes as one.
* **Capacity** (`Capacity`):
  - `KUBETUNE_SPOT`: a spot pool scaled by kubetune's own `capacity.scaling.plan` every
    tick, with the engine's `slots_ahead` as its demand ceiling (idle nodes no trial
    can use go at once, as the operator's loop does); an interrupted trial resumes
    from its checkpoint. With `notices`, a node's
    two-minute reclaim notice (the termination taint) makes the trial's next report
    answer "checkpoint and exit" (capacity/notices.py): it saves that step and leaves.
  - `SPOT_RESTART`: the same pool; an interrupted trial starts again from step 1.
  - `ONDEMAND_AUTOSCALED`: on-demand nodes scaled as the Kubernetes cluster autoscaler
    does by default: a 10 s scan adds nodes for pods that fit nowhere; a node unneeded
    for 10 minutes is removed, one per scan, and none within 10 minutes of a scale-up
    (`--scale-down-unneeded-time`, `--scale-down-delay-after-add`).
  - `ONDEMAND_ALWAYS_ON`: `max_nodes` on-demand nodes from the first decision to the end.
* **Spot**: the price changes every hour (a fraction of on-demand drawn per seed and
  hour); each spot node is reclaimed after an exponential time (mean
  `mean_hours_to_reclaim` node-hours), its taint appearing `notice_seconds` before; the
  group launches a replacement when the instance is gone.
* **Checkpoints**: a trial saves one when it pauses at a rung (ASHA) and, with notices,
  when told to leave; saving takes `checkpoint_seconds`. Without a notice a reclaimed
  trial loses what it trained since its last checkpoint.

The cost of the kubetune run comes from kubetune's cost ledger (`capacity.accounting.
CostBook`, fed the Nodes and trial pods as the operator lists them each tick); every run
also computes its cost independently (each node's life, cut at the hours where the price
changes) so that the two can be compared.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubetune import samplers
from kubetune.capacity.accounting import CostBook
from kubetune.capacity.pools import GPU_RESOURCE, LABEL_POOL, NodePool
from kubetune.capacity.scaling import GroupState, Instance, PendingPod, PoolNode, plan
from kubetune.engine import Engine, FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.events import ExitKind
from kubetune.names import LABEL_EXPERIMENT
from kubetune.simulate import make_spec
from kubetune.timestamps import rfc3339
from kubetune.trials import Decision

ON_DEMAND_USD_PER_HOUR = 1.006  # g5.xlarge, us-east-1
EPOCH = 1_800_000_000.0  # the virtual clock's zero, as wall time (for Node timestamps)
NAMESPACE, EXPERIMENT = "bench", "cost"
POOL = "gpu-spot"


class Capacity(StrEnum):
    KUBETUNE_SPOT = "kubetune-spot"
    KUBETUNE_SPOT_NO_NOTICE = "kubetune-spot-no-notice"
    SPOT_RESTART = "spot-restart"
    ONDEMAND_AUTOSCALED = "ondemand-autoscaled"
    ONDEMAND_ALWAYS_ON = "ondemand-always-on"

    @property
    def spot(self) -> bool:
        return self in (
            Capacity.KUBETUNE_SPOT,
            Capacity.KUBETUNE_SPOT_NO_NOTICE,
            Capacity.SPOT_RESTART,
        )


@dataclass(frozen=True)
class Setup:
    trials: int = 64
    parallel: int = 8
    workers: int = 1  # pods (1 GPU each) per trial
    max_resource: int = 27
    step_seconds: float = 60.0
    pod_start_seconds: float = 20.0
    checkpoint_seconds: float = 5.0
    boot_seconds: float = 120.0
    tick_seconds: float = 15.0
    grace_seconds: float = 120.0
    mean_hours_to_reclaim: float = 4.0
    notice_seconds: float = 120.0
    spot_share: tuple[float, float] = (0.28, 0.42)
    ca_scan_seconds: float = 10.0
    ca_unneeded_seconds: float = 600.0
    ca_delay_after_add_seconds: float = 600.0
    seed: int = 7

    @property
    def max_nodes(self) -> int:
        return self.parallel * self.workers


def objective(params: dict[str, Any], step: int) -> float:
    x, y = float(params["x"]), float(params["y"])
    return (x - 0.3) ** 2 + (y + 0.1) ** 2 + 1.0 / step


@dataclass
class Node:
    name: str
    launched: float
    ready_at: float
    ready: bool = False
    trial: int | None = None
    ended: float | None = None
    busy_since: float | None = None
    busy_seconds: float = 0.0
    noticed: bool = False  # the reclaim taint is on it


@dataclass
class Gang:
    """One attempt of a trial: its `workers` pods, placed, ended and resumed together."""

    trial: int
    attempt: int
    start_step: int
    nodes: list[str] = field(default_factory=list)
    placed_at: float | None = None
    uid: str = ""
    trained_to: int = 0  # the last step it finished
    leaving: bool = False  # told to checkpoint and exit


@dataclass
class Outcome:
    capacity: Capacity
    cost_usd: float  # the bench's own computation
    ledger_usd: float | None  # kubetune's CostBook (kubetune runs only)
    makespan: float
    node_seconds: float
    busy_seconds: float
    interruptions: int
    lost_gpu_seconds: float
    trials: int
    best: float | None
    boot_seconds: float = 0.0  # node-seconds spent booting (part of the idle time)
    tail_seconds: float = 0.0  # node-seconds after the experiment's last trial pod ended

    @property
    def idle_fraction(self) -> float:
        return 1.0 - self.busy_seconds / self.node_seconds if self.node_seconds else 0.0

    @property
    def lost_per_interruption(self) -> float:
        return self.lost_gpu_seconds / self.interruptions if self.interruptions else 0.0


@dataclass(order=True)
class _Event:
    time: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class _FixedSpotPrices:
    """The SpotPriceBook's face for CostBook: the bench's price of the moment."""

    def __init__(self, run: Run) -> None:
        self.run = run

    async def refresh(self, region: str, instance_types: Iterable[str]) -> None:
        return None

    def for_region(self, region: str | None) -> dict[tuple[str, str], float]:
        return {("g5.xlarge", "us-east-1a"): self.run.price(self.run.now)}


def _sync(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits on anything (CostBook.account with fixed prices)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("the coroutine waited on something")


class Run:
    def __init__(self, setup: Setup, capacity: Capacity) -> None:
        self.setup = setup
        self.capacity = capacity
        self.spec = make_spec(
            [
                {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
                {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
            ],
            # Random search: trial N has the same parameters under every capacity.
            algorithm={"name": "random", "seed": setup.seed},
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
                "name": POOL,
                "provider": {"type": "aws-asg", "autoScalingGroupName": "bench"},
                "region": "us-east-1",
                "instanceTypes": ["g5.xlarge"],
                "gpusPerNode": 1,
                "minNodes": 0,
                "maxNodes": setup.max_nodes,
                "nodeLabels": {"kubetune.dev/node-pool": POOL},
                "scaleDownGraceSeconds": setup.grace_seconds,
                "onDemandPriceUSDPerHour": {"g5.xlarge": ON_DEMAND_USD_PER_HOUR},
            }
        )
        self.engine = Engine(self.spec, EXPERIMENT)
        self.queue: list[_Event] = []
        self.seq = itertools.count()
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self.gone: list[Node] = []
        self.names = itertools.count()
        self.desired = 0
        self.gangs: dict[int, Gang] = {}
        self.pending: list[int] = []  # trial numbers waiting for nodes, in launch order
        self.checkpoints: dict[int, int] = {}
        self.idle_since: dict[str, float] = {}
        self.finished_at: float | None = None
        self.interruptions = 0
        self.lost_gpu_seconds = 0.0
        self.prices: dict[int, float] = {}
        self.uids = itertools.count()
        self.ended_pods: list[dict[str, Any]] = []  # pods that ended since the last tick
        self.book = CostBook(_FixedSpotPrices(self)) if self._kubetune else None  # type: ignore[arg-type]
        self.last_add = -math.inf  # the cluster autoscaler's last scale-up
        self.last_release = 0.0

    @property
    def _kubetune(self) -> bool:
        return self.capacity in (Capacity.KUBETUNE_SPOT, Capacity.KUBETUNE_SPOT_NO_NOTICE)

    # ----- the clock and prices ---------------------------------------------------------

    def at(self, time: float, kind: str, data: Any = None) -> None:
        heapq.heappush(self.queue, _Event(time, next(self.seq), kind, data))

    def price(self, time: float) -> float:
        if not self.capacity.spot:
            return ON_DEMAND_USD_PER_HOUR
        hour = int(time // 3600)
        if hour not in self.prices:
            low, high = self.setup.spot_share
            draw = random.Random(self.setup.seed * 100_003 + hour).uniform(low, high)
            self.prices[hour] = ON_DEMAND_USD_PER_HOUR * draw
        return self.prices[hour]

    # ----- nodes ------------------------------------------------------------------------

    def launch_node(self, boot: float) -> None:
        index = next(self.names)
        node = Node(f"node-{index}", self.now, self.now + boot)
        self.nodes[node.name] = node
        self.at(node.ready_at, "ready", node.name)
        if self.capacity.spot:
            # The k-th node launched lives as long under every capacity of one seed.
            draw = random.Random(self.setup.seed * 1_000_003 + index)
            life = draw.expovariate(1.0 / self.setup.mean_hours_to_reclaim) * 3600
            self.at(self.now + max(life - self.setup.notice_seconds, 0.0), "notice", node.name)
            self.at(self.now + life, "reclaim", node.name)

    def remove_node(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.ended = self.now
        self.gone.append(node)
        self.idle_since.pop(name, None)

    def free_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.ready and n.trial is None and not n.noticed]

    def place(self) -> None:
        for number in list(self.pending):
            free = self.free_nodes()
            if len(free) < self.setup.workers:
                return  # all or nothing, in launch order
            self.pending.remove(number)
            gang = self.gangs[number]
            gang.placed_at, gang.uid = self.now, f"uid-{next(self.uids)}"
            for node in free[: self.setup.workers]:
                node.trial, node.busy_since = number, self.now
                gang.nodes.append(node.name)
            start = self.now + self.setup.pod_start_seconds + self.setup.step_seconds
            self.at(start, "step", (number, gang.attempt, gang.start_step))

    def release(self, gang: Gang, ended: float) -> None:
        self.last_release = max(self.last_release, ended)
        for name in gang.nodes:
            node = self.nodes.get(name)
            if node is not None and node.trial == gang.trial:
                node.busy_seconds += ended - (node.busy_since or ended)
                node.trial, node.busy_since = None, None
            if gang.placed_at is not None:
                self.ended_pods.append(self._pod_json(gang, name, ended))

    # ----- scaling ----------------------------------------------------------------------

    def tick(self) -> None:
        if self._kubetune or self.capacity is Capacity.SPOT_RESTART:
            self.kubetune_scale()
        elif self.capacity is Capacity.ONDEMAND_AUTOSCALED:
            self.autoscaler_scale()
        if self.book is not None:
            _sync(self.book.account({POOL: self.pool}, EPOCH + self.now, *self.cluster_json()))
            self.ended_pods = []

    def kubetune_scale(self) -> None:
        live = list(self.nodes.values())
        group = GroupState(self.desired, 0, self.setup.max_nodes, [Instance(n.name) for n in live])
        observed = [
            PoolNode(
                n.name,
                n.name,
                1,
                int(n.trial is not None),
                n.trial is not None,
                n.ready,
                unschedulable=n.noticed,
                reclaiming=n.noticed,
            )
            for n in live
            if n.ready
        ]
        waiting = [
            PendingPod(NAMESPACE, f"trial-{t}-{w}", 1)
            for t in self.pending
            for w in range(self.setup.workers)
        ]
        # The operator's ceiling: each experiment's slots_ahead, a node per pod.
        ahead = self.engine.slots_ahead()
        ceiling = None if ahead is None else ahead * self.setup.workers
        decided = plan(
            self.pool, group, observed, waiting, self.now, self.idle_since, demand_ceiling=ceiling
        )
        self.idle_since = dict(decided.idle_since)
        if decided.desired is not None and decided.desired > self.desired:
            for _ in range(decided.desired - len(self.nodes)):
                self.launch_node(self.setup.boot_seconds)
            self.desired = decided.desired
        elif decided.desired is not None:
            self.desired = decided.desired
        for removal in decided.remove:
            node = self.nodes.get(removal.instance_id)
            if node is not None and node.trial is None:  # the shell's re-check
                self.remove_node(node.name)
                self.desired -= 1

    def autoscaler_scale(self) -> None:
        """The cluster autoscaler's defaults, as the issue and its FAQ describe them."""
        joining = sum(not n.ready for n in self.nodes.values())
        free = len(self.free_nodes()) + joining
        wanted = len(self.pending) * self.setup.workers
        room = self.setup.max_nodes - len(self.nodes)
        add = min(max(wanted - free, 0), room)
        for _ in range(add):
            self.launch_node(self.setup.boot_seconds)
        if add:
            self.last_add = self.now
        unneeded = wanted - free  # < 0: free nodes that no pending pod needs
        for node in self.nodes.values():
            if node.ready and node.trial is None and unneeded < 0:
                self.idle_since.setdefault(node.name, self.now)
                unneeded += 1
            else:
                self.idle_since.pop(node.name, None)
        if self.now - self.last_add < self.setup.ca_delay_after_add_seconds:
            return
        ripe = [
            (since, name)
            for name, since in self.idle_since.items()
            if self.now - since >= self.setup.ca_unneeded_seconds
        ]
        if ripe:
            self.remove_node(min(ripe)[1])  # one at a time

    def cluster_json(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The Nodes and trial pods as the operator lists them."""
        nodes = [
            {
                "metadata": {
                    "name": n.name,
                    "labels": {
                        "kubetune.dev/node-pool": POOL,
                        "node.kubernetes.io/instance-type": "g5.xlarge",
                        "topology.kubernetes.io/zone": "us-east-1a",
                        "karpenter.sh/capacity-type": "spot",
                    },
                    "creationTimestamp": rfc3339(EPOCH + n.launched, precise=True),
                }
            }
            for n in self.nodes.values()
        ]
        pods = [
            self._pod_json(gang, name, None)
            for gang in self.gangs.values()
            if gang.placed_at is not None
            for name in gang.nodes
        ]
        waiting = [
            self._pod_json(self.gangs[number], None, None, worker)
            for number in self.pending
            for worker in range(self.setup.workers)
        ]
        return nodes, pods + waiting + self.ended_pods

    def _pod_json(
        self, gang: Gang, node: str | None, ended: float | None, worker: int = 0
    ) -> dict[str, Any]:
        """A trial pod; `node` None: waiting for one (the pods that make a pool grow)."""
        state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        if gang.placed_at is not None:
            started = rfc3339(EPOCH + gang.placed_at, precise=True)
            state = {"running": {"startedAt": started}}
        if ended is not None and gang.placed_at is not None:
            finished = rfc3339(EPOCH + ended, precise=True)
            state = {"terminated": {"startedAt": started, "finishedAt": finished}}
        return {
            "metadata": {
                "name": f"{EXPERIMENT}-{gang.trial}-{gang.attempt}-{node or worker}",
                "namespace": NAMESPACE,
                "uid": f"{gang.uid}-{node or worker}",
                "labels": {LABEL_EXPERIMENT: EXPERIMENT, LABEL_POOL: POOL},
            },
            "spec": {
                **({"nodeName": node} if node else {}),
                "containers": [{"name": "trial", "resources": {"limits": {GPU_RESOURCE: "1"}}}],
            },
            "status": {
                "phase": "Running" if node else "Pending",
                "containerStatuses": [{"state": state}],
            },
        }

    # ----- the engine's side ------------------------------------------------------------

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
                self.gangs[number] = Gang(number, attempt, start, trained_to=start - 1)
                self.pending.append(number)
            case StopTrial(number=number, attempt=attempt):
                gang = self.gangs.get(number)
                if gang is not None and gang.attempt == attempt:
                    self.end_gang(gang, ExitKind.EXITED)
                    return True
            case FinishExperiment():
                self.finished_at = self.now
        return False

    def end_gang(
        self, gang: Gang, kind: ExitKind, message: str = "", at: float | None = None
    ) -> None:
        del self.gangs[gang.trial]
        if gang.placed_at is None:
            self.pending.remove(gang.trial)
        self.release(gang, self.now if at is None else at)
        code = 0 if kind is ExitKind.EXITED else None
        self.engine.attempt_ended(gang.trial, gang.attempt, kind, code, self.now, message)

    def on_step(self, number: int, attempt: int, step: int) -> None:
        gang = self.gangs.get(number)
        if gang is None or gang.attempt != attempt:
            return
        gang.trained_to = step
        params = self.engine.trials[number].params
        verdict = self.engine.report(
            number, attempt, step, {"loss": objective(params, step)}, self.now
        )
        told_to_leave = self.capacity is Capacity.KUBETUNE_SPOT and any(
            self.nodes[n].noticed for n in gang.nodes if n in self.nodes
        )
        if verdict.decision is Decision.PAUSE or (
            told_to_leave and verdict.decision is Decision.CONTINUE
        ):
            gang.leaving = verdict.decision is Decision.CONTINUE
            self.at(self.now + self.setup.checkpoint_seconds, "saved", (number, attempt, step))
        elif verdict.decision is Decision.CONTINUE and step < self.setup.max_resource:
            self.at(self.now + self.setup.step_seconds, "step", (number, attempt, step + 1))
        else:
            self.end_gang(gang, ExitKind.EXITED)
        self.decide()

    def on_saved(self, number: int, attempt: int, step: int) -> None:
        gang = self.gangs.get(number)
        if gang is None or gang.attempt != attempt:
            return  # reclaimed while saving: the checkpoint never completed
        self.checkpoints[number] = step
        if gang.leaving:  # a reclaim notice: an interruption, resumed from this step
            self.interruptions += 1
            self.lost_gpu_seconds += self.setup.checkpoint_seconds * self.setup.workers
            self.end_gang(gang, ExitKind.INTERRUPTED, "reclaim notice: checkpointed")
        else:
            self.end_gang(gang, ExitKind.EXITED)
        self.decide()

    def on_notice(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is not None:
            node.noticed = True  # the taint: nothing new is scheduled there

    def on_reclaim(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return  # already terminated by a scale-down
        number = node.trial
        if number is not None:
            gang = self.gangs[number]
            self.interruptions += 1
            kept = 0 if self.capacity is Capacity.SPOT_RESTART else self.checkpoints.get(number, 0)
            if self.capacity is Capacity.SPOT_RESTART:
                self.checkpoints.pop(number, None)
            # What it trained that no checkpoint keeps: whole steps past the checkpoint,
            # and the step in flight.
            assert gang.placed_at is not None
            in_flight = self.now - max(
                gang.placed_at + self.setup.pod_start_seconds,
                gang.placed_at
                + self.setup.pod_start_seconds
                + (gang.trained_to - gang.start_step + 1) * self.setup.step_seconds,
            )
            steps = max(gang.trained_to - kept, 0) * self.setup.step_seconds
            self.lost_gpu_seconds += (steps + max(in_flight, 0.0)) * self.setup.workers
            self.end_gang(gang, ExitKind.INTERRUPTED, "spot node reclaimed")
        self.remove_node(name)
        self.launch_node(self.setup.boot_seconds)  # the group replaces it
        self.decide()

    # ----- running ----------------------------------------------------------------------

    def run(self) -> Outcome:
        if self.capacity is Capacity.ONDEMAND_ALWAYS_ON:
            for _ in range(self.setup.max_nodes):
                self.launch_node(0.0)
            for node in self.nodes.values():
                node.ready = True
            self.queue.clear()
            self.desired = self.setup.max_nodes
        self.decide()
        if self.capacity is not Capacity.ONDEMAND_ALWAYS_ON:
            scan = (
                self.setup.ca_scan_seconds
                if self.capacity is Capacity.ONDEMAND_AUTOSCALED
                else self.setup.tick_seconds
            )
            self.at(scan, "tick", scan)
        while self.queue:
            event = heapq.heappop(self.queue)
            self.now = event.time
            match event.kind:
                case "tick":
                    self.tick()
                    if self.finished_at is None or self.nodes:
                        self.at(self.now + event.data, "tick", event.data)
                case "ready" if event.data in self.nodes:
                    self.nodes[event.data].ready = True
                    self.place()
                case "step":
                    self.on_step(*event.data)
                case "saved":
                    self.on_saved(*event.data)
                case "notice":
                    self.on_notice(event.data)
                case "reclaim":
                    self.on_reclaim(event.data)
            if self.finished_at is not None and self.capacity is Capacity.ONDEMAND_ALWAYS_ON:
                break
            if self.finished_at is not None and not self.nodes:
                break
        if self.finished_at is None:
            raise RuntimeError(f"the experiment did not finish: {self.engine.counts()}")
        return self.outcome()

    def outcome(self) -> Outcome:
        assert self.finished_at is not None
        for node in list(self.nodes.values()):
            self.remove_node(node.name)
        if self.book is not None:  # the last window, up to the pool's last node
            _sync(self.book.account({POOL: self.pool}, EPOCH + self.now, *self.cluster_json()))
        node_seconds = sum((n.ended or self.now) - n.launched for n in self.gone)
        busy = sum(n.busy_seconds for n in self.gone)
        best = self.engine.best()
        started = self.engine.started_at or 0.0
        ledger = None
        if self.book is not None:
            ledger = self.book.ledger.experiments.get((NAMESPACE, EXPERIMENT), 0.0)
        return Outcome(
            capacity=self.capacity,
            cost_usd=sum(self._node_cost(n) for n in self.gone),
            ledger_usd=ledger,
            makespan=self.finished_at - started,
            node_seconds=node_seconds,
            busy_seconds=busy,
            interruptions=self.interruptions,
            lost_gpu_seconds=self.lost_gpu_seconds,
            trials=len(self.engine.trials),
            best=best.value if best else None,
            boot_seconds=sum(
                min(n.ready_at, n.ended or n.ready_at) - n.launched for n in self.gone
            ),
            tail_seconds=sum(max((n.ended or 0.0) - self.last_release, 0.0) for n in self.gone),
        )

    def _node_cost(self, node: Node) -> float:
        """Exactly: the node's life, cut at the hours where the price changes."""
        start, end, total = node.launched, node.ended or node.launched, 0.0
        while start < end:
            edge = min(end, (math.floor(start / 3600) + 1) * 3600)
            total += (edge - start) * self.price(start) / 3600
            start = edge
        return total
