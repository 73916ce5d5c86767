"""kwok against the test control plane, with stages written here, for tests at scale.

The bare ``kwok`` binary ships no stages (it refuses to start without some), and the
stock "pod-complete" stage of its kustomize tree matches only pods owned by a Job. The
stages below:

* ``node-initialize`` / ``node-heartbeat``: nodes kwok manages become Ready and keep a
  fresh heartbeat (kwok also renews their Leases), so the node lifecycle controller
  leaves them alone and kube-scheduler binds pods to them;
* ``pod-ready``: every pod bound to such a node goes Running (podIP from ``--cidr``);
* ``pod-complete``: a Running pod labelled ``kubetune.dev/kwok-complete=true`` goes
  Succeeded (exit code 0, reason Completed) after the delay in its annotation
  ``kubetune.dev/kwok-delay`` (a Go duration, e.g. ``"2s"``; default 1s);
* ``pod-fail``: a Running pod labelled ``kubetune.dev/kwok-fail=true`` goes Failed with
  the exit code in annotation ``kubetune.dev/kwok-exit-code`` (default 1) after the same
  delay;
* ``pod-delete``: a pod with a deletionTimestamp (and no finalizers) is removed, as a
  kubelet does once its containers are gone.

Usage::

    with Kwok(cp) as kwok:
        kwok.create_nodes(3, prefix="gpu", gpus=8, labels={"kubetune.dev/node-pool": "gpu-spot"},
                          taints=[Taint("nvidia.com/gpu", "true")])
        ...  # create pods; they run on the fake nodes

Nothing runs in those pods: they only change status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .controlplane import Component, free_port, wait_until
from .process_node import Taint

if TYPE_CHECKING:
    from .controlplane import ControlPlane

MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
MANAGED_VALUE = "fake"
COMPLETE_LABEL = "kubetune.dev/kwok-complete"
FAIL_LABEL = "kubetune.dev/kwok-fail"
DELAY_ANNOTATION = "kubetune.dev/kwok-delay"
EXIT_CODE_ANNOTATION = "kubetune.dev/kwok-exit-code"

_NODE_CONDITIONS = """\
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}"""

_POD_TERMINATED = """\
      {{ $now := Now }}
      {{ $root := . }}
      {{ $annotations := or .metadata.annotations dict }}
      {{ $code := %(code)s }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        reason: PodCompleted
        status: "False"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        reason: PodCompleted
        status: "False"
        type: ContainersReady
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      {{ $origin := index $root.status.containerStatuses $index }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $code }}
            finishedAt: {{ $now | Quote }}
            reason: %(reason)s
            startedAt: {{ $origin.state.running.startedAt | Quote }}
      {{ end }}
      phase: %(phase)s"""


def _terminal_stage(name: str, label: str, phase: str, reason: str, code: str) -> str:
    """A stage taking a Running pod with ``label=true`` to ``phase``; ``code`` is a
    template expression for the exit code."""
    template = _POD_TERMINATED % {"code": code, "reason": reason, "phase": phase}
    return f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.labels["{label}"]'
      operator: 'In'
      values: ['true']
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
  delay:
    durationMilliseconds: 1000
    durationFrom:
      expressionFrom: '.metadata.annotations["{DELAY_ANNOTATION}"]'
  next:
    statusTemplate: |
{template}
"""


STAGES = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
{_NODE_CONDITIONS}
      addresses:
      {{{{ with NodeIP }}}}
      - address: {{{{ . | Quote }}}}
        type: InternalIP
      {{{{ end }}}}
      {{{{ with NodeName }}}}
      - address: {{{{ . | Quote }}}}
        type: Hostname
      {{{{ end }}}}
      allocatable:
      {{{{ with .status.allocatable }}}}
      {{{{ YAML . 1 }}}}
      {{{{ else }}}}
        cpu: 1k
        memory: 1Ti
        pods: 1M
      {{{{ end }}}}
      capacity:
      {{{{ with .status.capacity }}}}
      {{{{ YAML . 1 }}}}
      {{{{ else }}}}
        cpu: 1k
        memory: 1Ti
        pods: 1M
      {{{{ end }}}}
      nodeInfo:
        architecture: amd64
        bootID: ""
        containerRuntimeVersion: kwok
        kernelVersion: kwok
        kubeProxyVersion: kwok
        kubeletVersion: kwok
        machineID: ""
        operatingSystem: linux
        osImage: ""
        systemUUID: ""
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 20000
    jitterDurationMilliseconds: 25000
  next:
    statusTemplate: |
{_NODE_CONDITIONS}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: ContainersReady
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      {{{{ with NodeIPWith .spec.nodeName }}}}
      hostIP: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ $hostNetwork := or .spec.hostNetwork false }}}}
      {{{{ $ns := .metadata.namespace }}}}
      {{{{ with PodIPWith .spec.nodeName $hostNetwork .metadata.uid .metadata.name $ns }}}}
      podIP: {{{{ . | Quote }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
{_terminal_stage("pod-complete", COMPLETE_LABEL, "Succeeded", "Completed", "0")}---
{
    _terminal_stage(
        "pod-fail",
        FAIL_LABEL,
        "Failed",
        "Error",
        f'or ( index $annotations "{EXIT_CODE_ANNOTATION}" ) 1',
    )
}---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
    - key: '.metadata.finalizers'
      operator: 'DoesNotExist'
  next:
    delete: true
"""


class Kwok:
    """A kwok process managing the nodes annotated ``kwok.x-k8s.io/node=fake``."""

    def __init__(
        self, cp: ControlPlane, *, cidr: str = "10.244.0.0/16", extra_args: Sequence[str] = ()
    ) -> None:
        self.cp = cp
        self.cidr = cidr
        self.extra_args = list(extra_args)
        assert cp.workdir is not None
        self.dir = cp.workdir / "kwok"
        self.component: Component | None = None
        self.nodes: list[str] = []

    def start(self, timeout: float = 30.0) -> Kwok:
        assert self.cp.binaries is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "kwok.yaml"
        config.write_text(STAGES)
        port = free_port()
        self.component = Component(
            "kwok",
            [
                str(self.cp.binaries.kwok),
                f"--kubeconfig={self.cp.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}={MANAGED_VALUE}",
                f"--cidr={self.cidr}",
                "--node-ip=10.243.0.1",
                f"--server-address=127.0.0.1:{port}",
                *self.extra_args,
            ],
            self.cp.logs_dir / "kwok.log",
        )
        self.component.start()
        self.cp.components["kwok"] = self.component  # its log tail joins the others
        try:
            wait_until(
                self._healthy(port), timeout, "kwok to serve /healthz", on_poll=self._check_alive
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self, port: int) -> Any:
        import urllib.request

        def probe() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200

        return probe

    def _check_alive(self) -> None:
        c = self.component
        if c and c.process and c.process.poll() is not None:
            raise RuntimeError(f"kwok exited with {c.process.returncode}:\n{c.log_tail(40)}")

    def stop(self, delete_nodes: bool = True) -> None:
        if delete_nodes and self.nodes and self.cp.running():
            self.cp.kubectl(
                "delete", "node", "--ignore-not-found", "--wait=false", *self.nodes, check=False
            )
            self.nodes.clear()
        if self.component:
            self.component.stop()
            self.cp.components.pop("kwok", None)
            self.component = None

    def __enter__(self) -> Kwok:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_nodes(
        self,
        count: int,
        *,
        prefix: str = "kwok-node",
        cpu: str = "32",
        memory: str = "256Gi",
        pods: int = 110,
        gpus: int = 0,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Taint] = (),
        wait: bool = True,
        timeout: float = 60.0,
    ) -> list[str]:
        """Creates ``count`` Nodes that this kwok manages; returns their names. With
        ``wait``, returns once each is Ready and free of the not-ready taint."""
        from kubernetes import client as k8s

        api = self.cp.api_client()
        v1 = k8s.CoreV1Api(api)
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        start = len([n for n in self.nodes if n.startswith(prefix + "-")])
        names = [f"{prefix}-{i}" for i in range(start, start + count)]
        try:
            for name in names:
                v1.create_node(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": name,
                            "annotations": {MANAGED_ANNOTATION: MANAGED_VALUE},
                            "labels": {
                                "kubernetes.io/hostname": name,
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64",
                                "type": "kwok",
                                **(labels or {}),
                            },
                        },
                        "spec": {"taints": [t.to_dict() for t in taints]},
                        "status": {"capacity": resources, "allocatable": resources},
                    }
                )
                self.nodes.append(name)

            def all_ready() -> bool:
                for name in names:
                    node = v1.read_node(name)
                    ready = any(
                        c.type == "Ready" and c.status == "True"
                        for c in node.status.conditions or []
                    )
                    tainted = any(
                        t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or []
                    )
                    if not ready or tainted:
                        return False
                return True

            if wait:
                wait_until(
                    all_ready,
                    timeout,
                    f"{count} kwok nodes to be Ready",
                    interval=0.2,
                    on_poll=self._check_alive,
                )
        finally:
            api.close()
        return names

    def delete_nodes(self, names: Sequence[str] | None = None) -> None:
        names = list(names if names is not None else self.nodes)
        if names:
            self.cp.kubectl("delete", "node", "--ignore-not-found", "--wait=false", *names)
        self.nodes = [n for n in self.nodes if n not in names]


def stage_file(path: Path) -> Path:
    """Writes the stages to ``path`` (to run kwok by hand against a cluster)."""
    path.write_text(STAGES)
    return path


__all__ = [
    "COMPLETE_LABEL",
    "DELAY_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "FAIL_LABEL",
    "STAGES",
    "Kwok",
    "Taint",
    "stage_file",
]
