"""`CloudNodes`: EC2 instances joining the cluster as Nodes, played for the tests.

On AWS, an instance the Auto Scaling group launches boots, its kubelet registers a Node
(with `spec.providerID` `aws:///zone/i-...` and the node group's labels and taints), and
a terminated instance's Node goes away. Here a thread watches the group on moto's server
and does the same with `ProcessNode`s (so trials really run on them): a node per live
instance, stopped (Node deleted) once its instance is gone. `interrupt()` plays a spot
reclaim: the node's pods are evicted, its Node deleted, and its instance terminated
without lowering the desired capacity, so that the group launches a replacement.

It also records what a test checks afterwards: each node's life (its Node's
`creationTimestamp` and when it was deleted), and the largest number of Nodes and the
largest desired capacity it ever saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune.timestamps import parse_rfc3339
from tests.capacity.conftest import INSTANCE_TYPE, ZONE, AsgWorld


@dataclass
class NodeLife:
    name: str
    instance: str
    created: float  # the Node's creationTimestamp (whole seconds, as the API server keeps it)
    deleted: float | None = None


class CloudNodes:
    def __init__(
        self,
        asg: AsgWorld,
        make_node: Callable[..., Any],
        core: Any,
        *,
        labels: dict[str, str],
        taints: list[Any],
        gpus: int = 1,
        poll: float = 0.3,
    ) -> None:
        self.asg = asg
        self.make_node = make_node
        self.core = core
        self.labels = labels
        self.taints = taints
        self.gpus = gpus
        self.poll = poll
        self.nodes: dict[str, Any] = {}  # instance id -> ProcessNode
        self.lives: dict[str, NodeLife] = {}  # instance id -> life
        self.max_nodes = 0
        self.max_desired = 0
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="cloud-nodes", daemon=True)

    def start(self) -> CloudNodes:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _loop(self) -> None:
        while not self.stopping.wait(self.poll):
            try:
                self.sync()
            except Exception as error:  # noted, and tried again
                self.errors.append(repr(error))

    def sync(self) -> None:
        group = self.asg.group()
        live = {
            i["InstanceId"]
            for i in group["Instances"]
            if i["LifecycleState"] in ("Pending", "InService")
        }
        with self.lock:
            self.max_desired = max(self.max_desired, int(group["DesiredCapacity"]))
            for instance in sorted(live - set(self.nodes)):
                self._join(instance)
            for instance in sorted(set(self.nodes) - live):
                self._leave(instance)
            self.max_nodes = max(self.max_nodes, len(self.nodes))

    def _join(self, instance: str) -> None:
        name = f"n-{instance}"
        labels = {
            **self.labels,
            "node.kubernetes.io/instance-type": INSTANCE_TYPE,
            "topology.kubernetes.io/zone": ZONE,
        }
        node = self.make_node(name=name, gpus=self.gpus, labels=labels, taints=self.taints)
        created = self.core.patch_node(name, {"spec": {"providerID": f"aws:///{ZONE}/{instance}"}})
        stamp = parse_rfc3339(created.metadata.creation_timestamp.isoformat()) or time.time()
        self.nodes[instance] = node
        self.lives[instance] = NodeLife(name, instance, stamp)

    def _leave(self, instance: str) -> None:
        node = self.nodes.pop(instance)
        # The Node goes with its instance (its deletion time is the end of its cost); then
        # the agent stops (its processes end, its pods are marked Failed).
        self.core.delete_node(node.name)
        self.lives[instance].deleted = time.time()
        node.stop(delete_node=False)

    def node_of(self, name: str) -> Any:
        with self.lock:
            return next(n for n in self.nodes.values() if n.name == name)

    def interrupt(self, name: str) -> str:
        """A spot reclaim of the node `name`; returns its instance id."""
        with self.lock:  # the sync thread must not see the instance without its node
            instance = next(i for i, n in self.nodes.items() if n.name == name)
            self.asg.client("autoscaling").terminate_instance_in_auto_scaling_group(
                InstanceId=instance, ShouldDecrementDesiredCapacity=False
            )
            node = self.nodes.pop(instance)
            node.interrupt()  # pods Failed/Evicted (DisruptionTarget), Node deleted
            self.lives[instance].deleted = time.time()
        return instance

    def count(self) -> int:
        with self.lock:
            return len(self.nodes)
