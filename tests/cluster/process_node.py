"""A test-only node agent that plays the kubelet for one Node by running each pod's
first container as a local process.

There is no container runtime on the test machines, yet the operator's end-to-end
tests need the real trial code and SDK to run inside "pods". A :class:`ProcessNode`
registers a Node (with cpu/memory/pods/``nvidia.com/gpu`` allocatable, labels and
taints, e.g. a spot GPU pool), keeps its Lease and Ready condition fresh, and for every
pod that kube-scheduler binds to it:

* runs ``command`` + ``args`` of the first container (``$(VAR)`` references expanded
  as the kubelet does) with its ``env`` and ``envFrom`` (``value``, ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef`` for metadata.name/namespace/uid/labels/annotations,
  spec.nodeName/serviceAccountName, status.podIP/hostIP, and ``resourceFieldRef``)
  and ``workingDir``;
* reports real status: Pending -> Running -> Succeeded/Failed, container state
  running/terminated with exitCode, reason ``Completed``/``Error``, startedAt and
  finishedAt, podIP 127.0.0.1 and the usual conditions; ``restartPolicy`` OnFailure
  and Always restart the process (``restartCount`` counts);
* writes stdout+stderr to a file and serves it like a kubelet (HTTPS
  ``/containerLogs/...``, verified both ways by the cluster CA), so ``kubectl logs``
  and ``read_namespaced_pod_log`` work, ``follow`` included; :meth:`ProcessNode.logs`
  reads the same file directly;
* on deletion (deletionTimestamp set) sends SIGTERM to the process group, SIGKILL after
  the grace period, then deletes the pod with grace 0 as a kubelet does;
* :meth:`ProcessNode.evict` and :meth:`ProcessNode.interrupt` simulate node-pressure
  eviction and a spot interruption (pods Failed, reason ``Evicted``, a
  ``DisruptionTarget`` condition; ``interrupt`` also deletes the Node).

Limits (it is a test harness, not a kubelet):

* The image is ignored; the process runs on this machine with this machine's
  environment (``inherit_env``), plus ``path_prefix`` at the front of PATH, plus the pod's
  env. No isolation, no resource limits, no volumes (``volumeMounts`` are ignored, the
  service-account token is not mounted), no probes, no init or sidecar containers, no
  ``activeDeadlineSeconds``, no exec/attach/port-forward. Only the first container
  runs; any other container is reported as waiting with reason ``NotRunByProcessNode``.
* A command is required (there is no image entrypoint to fall back on); a missing
  executable ends the container with exit code 128, reason ``StartError``.
* Every pod's IP is 127.0.0.1 (two pods listening on one port collide), and Services do
  not route anywhere. With ``resolve_pod_dns=True`` each pod gets its own loopback
  address instead, and an env value naming a pod as ``<hostname>.<subdomain>.<ns>.svc``
  becomes that pod's IP (the harness standing in for cluster DNS; see that section).
* Logs of restarts are appended to one file (``previous=true`` returns the same log);
  ``timestamps`` and ``sinceSeconds`` are ignored.
* Pods found Running at start-up (left by an earlier agent for the same node name) are
  marked Failed, reason ``NodeAgentRestarted``: their processes are gone.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .controlplane import pdeathsig_prefix, read_versions, wait_until

if TYPE_CHECKING:
    from .controlplane import ControlPlane

log = logging.getLogger(__name__)

POD_IP = "127.0.0.1"
# resolve_pod_dns: every pod its own loopback address (Linux routes all of 127/8 to lo).
_pod_numbers = itertools.count(1)
SERVICE_NAME = re.compile(r"([a-z0-9-]+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?")
LEASE_NAMESPACE = "kube-node-lease"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    # Lease times are MicroTime: the apiserver insists on the fractional part.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def to_dict(self) -> dict[str, str]:
        d = {"key": self.key, "effect": self.effect}
        if self.value:
            d["value"] = self.value
        return d


class EnvResolutionError(Exception):
    """A referenced Secret/ConfigMap (or key) is missing: CreateContainerConfigError."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, undefined ones kept
    verbatim, and ``$$`` escapes a dollar."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(repl, text)


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_quantity(q: str) -> float:
    m = _QUANTITY.match(str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"unsupported quantity {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


@dataclass
class _PodRun:
    """What the agent knows about one pod it runs."""

    namespace: str
    name: str
    uid: str
    dir: Path
    log_path: Path
    container: str
    grace_seconds: float = 30.0
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    evicted: str | None = None  # the eviction message, once evicted
    deleted: bool = False  # the pod object is gone: report nothing more
    thread: threading.Thread | None = None
    pod: dict[str, Any] = field(default_factory=dict)  # as first seen

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ProcessNode:
    """One fake Node whose pods are local processes. See the module docstring.

    ``start()`` registers the Node and returns once it is schedulable; ``stop()`` kills
    whatever still runs and deletes the Node. Also a context manager.
    """

    def __init__(
        self,
        kubeconfig: str | Path,
        name: str = "local-0",
        *,
        cpu: str = "8",
        memory: str = "32Gi",
        pods: int = 110,
        gpus: int = 0,
        extra_resources: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Taint] = (),
        workdir: str | Path | None = None,
        path_prefix: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        client_ca: str | Path | None = None,
        lease_seconds: int = 40,
        heartbeat_seconds: float = 10.0,
        resolve_pod_dns: bool = False,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.name = name
        resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "100Gi"}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        resources.update(extra_resources or {})
        self.resources = resources
        self.labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubetune.dev/process-node": "true",
            **(labels or {}),
        }
        self.taints = list(taints)
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir)
            if workdir
            else Path(os.environ.get("TMPDIR", "/tmp")) / f"kubetune-node-{name}-{os.getpid()}"
        )
        self.path_prefix = [str(p) for p in path_prefix]
        self.extra_env = dict(env or {})
        self.inherit_env = inherit_env
        self.tls = (Path(tls_cert), Path(tls_key)) if tls_cert and tls_key else None
        self.client_ca = Path(client_ca) if client_ca else None
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.resolve_pod_dns = resolve_pod_dns  # see "cluster DNS stand-in" below
        self._pod_ips: dict[str, str] = {}

        self._api: Any = None
        self._v1: k8s.CoreV1Api | None = None
        self._runs: dict[str, _PodRun] = {}  # by pod uid
        self._by_name: dict[tuple[str, str], _PodRun] = {}
        # Log requests served, by pod name: what a test reads to count the streams the
        # operator opened.
        self.log_requests: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch_resp: Any = None
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.started = False
        self.node_deleted = False

    @classmethod
    def for_control_plane(
        cls, cp: ControlPlane, name: str = "local-0", **kwargs: Any
    ) -> ProcessNode:
        """A node wired to ``cp``: admin kubeconfig, and a log server whose certificate
        the apiserver trusts (so ``kubectl logs`` works)."""
        cert, key = cp.issue_serving_cert(name)
        kwargs.setdefault("workdir", Path(cp.workdir or "/tmp") / "nodes" / name)
        return cls(cp.kubeconfig, name, tls_cert=cert, tls_key=key, client_ca=cp.ca_file, **kwargs)

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> ProcessNode:
        from kubernetes import config

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        self.node_deleted = False
        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._api.configuration.connection_pool_maxsize = 32
        self._api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self._v1 = k8s.CoreV1Api(self._api)
        if self.tls:
            self._start_log_server()
        self._register()
        self._renew_lease()
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self._watch_loop, "watch")
        self.started = True
        try:
            wait_until(
                self._schedulable, timeout, f"node {self.name} to become schedulable", interval=0.2
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, delete_node: bool = True, grace_seconds: float = 2.0) -> None:
        """Stops the agent like a graceful node shutdown: every process it runs gets
        SIGTERM, then SIGKILL after ``grace_seconds``; their pods are marked Failed,
        reason ``Terminated`` (so deleting them, or their namespace, is immediate); then
        the Node is deleted unless told not to."""
        if not self.started:
            return
        self._stopping.set()
        with self._lock:
            runs = [r for r in self._runs.values() if not r.done.is_set()]
        self._terminate_runs(
            runs,
            "Pod was terminated in response to imminent node shutdown.",
            reason="Terminated",
            grace_seconds=grace_seconds,
            timeout=grace_seconds + 10,
        )
        self._close_watch()
        if delete_node and not self.node_deleted:
            try:
                self._delete_node()
            except Exception as exc:  # the control plane may be gone first
                log.warning("node %s: could not delete the Node: %s", self.name, exc)
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(5)
        self._threads.clear()
        if self._api is not None:
            self._api.close()
            self._api = None
        self.started = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ProcessNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests call --------------------------------------------------------------

    def logs(self, namespace: str, pod: str) -> str:
        """The captured stdout+stderr of the pod's container (also after it is gone)."""
        with self._lock:
            run = self._by_name.get((namespace, pod))
        if run is None:
            raise KeyError(f"pod {namespace}/{pod} never ran on node {self.name}")
        try:
            return run.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pid(self, namespace: str, pod: str) -> int | None:
        """The pid of the pod's process while it runs."""
        with self._lock:
            run = self._by_name.get((namespace, pod))
        return run.process.pid if run and run.alive() and run.process else None

    def evict(
        self, namespace: str, pod: str, message: str | None = None, timeout: float = 30.0
    ) -> None:
        """Kills the pod's process and marks it Failed, reason ``Evicted``, with a
        ``DisruptionTarget`` condition (as node-pressure eviction does); the Node stays."""
        with self._lock:
            run = self._by_name.get((namespace, pod))
        if run is None:
            raise KeyError(f"pod {namespace}/{pod} is not on node {self.name}")
        msg = message or f"Evicted from node {self.name}"
        self._terminate_runs([run], msg, reason="Evicted", grace_seconds=0, timeout=timeout)

    def interrupt(self, message: str | None = None, timeout: float = 30.0) -> None:
        """A spot interruption: the Node is cordoned, every pod's process is killed, every
        pod marked Failed (``Evicted``, ``DisruptionTarget``), then the Node is deleted and
        the agent stops.

        The cordon comes first as on EKS, where the node termination handler cordons on the
        two-minute notice; without it the scheduler could bind a replacement pod to the
        dying node in the instant between the evictions and the Node's deletion."""
        msg = message or f"Node {self.name} was reclaimed (simulated spot interruption)"
        if self._v1 is not None:
            with contextlib.suppress(ApiException):
                self._v1.patch_node(self.name, {"spec": {"unschedulable": True}})
        with self._lock:
            runs = [r for r in self._runs.values() if not r.done.is_set()]
        self._terminate_runs(runs, msg, reason="Evicted", grace_seconds=0, timeout=timeout)
        self._delete_node()
        self.stop(delete_node=False)

    # -- registration and heartbeat -------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        now = _now()
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": r,
                "message": m,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            for t, r, m in (
                ("MemoryPressure", "KubeletHasSufficientMemory", "enough memory"),
                ("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "enough PIDs"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "process node agent is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
        k8s_version = read_versions().get("K8S_VERSION", "v0.0.0")
        status: dict[str, Any] = {
            "capacity": self.resources,
            "allocatable": self.resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "kubetune process node",
                "containerRuntimeVersion": "process://local",
                "kubeletVersion": k8s_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        if self.port:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.port}}
        return status

    def _register(self) -> None:
        assert self._v1 is not None
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": [t.to_dict() for t in self.taints]},
            "status": self._node_status(),
        }
        try:
            node = self._v1.create_node(body)
            self._node_uid = node.metadata.uid
        except ApiException as exc:
            if exc.status != 409:
                raise
            # A node of that name is left over (an earlier agent): take it over.
            node = self._v1.patch_node(
                self.name,
                {
                    "metadata": {"labels": self.labels},
                    "spec": {"taints": [t.to_dict() for t in self.taints]},
                },
            )
            self._node_uid = node.metadata.uid
        self._v1.patch_node_status(self.name, {"status": self._node_status()})

    def _renew_lease(self) -> None:
        coord = k8s.CoordinationV1Api(self._api)
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _now_micro(),
        }
        try:
            coord.patch_namespaced_lease(self.name, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": LEASE_NAMESPACE,
                    # The Lease goes with its Node, as a kubelet's does.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": self._node_uid,
                        }
                    ],
                },
                "spec": spec,
            }
            with contextlib.suppress(ApiException):
                coord.create_namespaced_lease(LEASE_NAMESPACE, body)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.wait(self.heartbeat_seconds):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 60:
                    assert self._v1 is not None
                    self._v1.patch_node_status(self.name, {"status": self._node_status()})
                    last_status = time.monotonic()
            except Exception as exc:
                if not self._stopping.is_set():
                    log.warning("node %s: heartbeat failed: %s", self.name, exc)

    def _schedulable(self) -> bool:
        assert self._v1 is not None
        node = self._v1.read_node(self.name)
        # TaintNodesByCondition puts node.kubernetes.io/not-ready on every new Node;
        # the node lifecycle controller lifts it once it sees Ready=True.
        return not any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])

    def _delete_node(self) -> None:
        if self._v1 is None:
            return
        try:
            self._v1.delete_node(self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.node_deleted = True

    # -- pods -----------------------------------------------------------------------

    def _spawn(self, target: Any, what: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"{self.name}-{what}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _close_watch(self) -> None:
        resp = self._watch_resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()  # unblocks the watch thread's read at once
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self._stopping.is_set():
            try:
                assert self._v1 is not None
                resp = self._v1.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                listing = json.loads(resp.data)
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self._on_pod(pod, deleted=False)
                with self._lock:
                    vanished = [r for u, r in self._runs.items() if u not in seen]
                for run in vanished:
                    self._on_vanished(run)
                self._watch_stream(selector, listing["metadata"]["resourceVersion"])
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("node %s: pod watch failed, relisting: %s", self.name, exc)
                time.sleep(0.5)

    def _watch_stream(self, selector: str, resource_version: str) -> None:
        assert self._v1 is not None
        resp = self._v1.list_pod_for_all_namespaces(
            field_selector=selector,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=60,
            _preload_content=False,
        )
        self._watch_resp = resp
        if self._stopping.is_set():
            resp.release_conn()
            return
        try:
            buf = b""
            for chunk in resp.stream(4096, decode_content=True):
                if self._stopping.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind == "ERROR":
                        return  # e.g. 410 Gone: relist
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on_pod(event["object"], deleted=kind == "DELETED")
        finally:
            self._watch_resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()

    def _on_vanished(self, run: _PodRun) -> None:
        run.deleted = True
        run.grace_seconds = 0
        run.stop_requested.set()

    def _on_pod(self, pod: dict[str, Any], deleted: bool) -> None:
        if self._stopping.is_set():
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            run = self._runs.get(uid)
        if deleted:
            if run:
                self._on_vanished(run)
            return
        phase = pod.get("status", {}).get("phase", "Pending")
        if meta.get("deletionTimestamp"):
            if run and not run.done.is_set():
                grace = meta.get("deletionGracePeriodSeconds")
                run.grace_seconds = float(grace if grace is not None else run.grace_seconds)
                run.stop_requested.set()  # the pod's thread terminates and deletes it
            else:
                self._delete_pod_now(meta["namespace"], meta["name"], uid)
            return
        if run is not None or phase in ("Succeeded", "Failed"):
            return
        if phase == "Running":
            self._patch_status(
                meta["namespace"],
                meta["name"],
                {
                    "phase": "Failed",
                    "reason": "NodeAgentRestarted",
                    "message": f"the process node agent of {self.name} restarted; the "
                    "process of this pod is gone",
                },
            )
            return
        self._start_run(pod)

    def _start_run(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        pod_dir = self.workdir / "pods" / f"{ns}_{name}_{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        container = spec["containers"][0]["name"]
        run = _PodRun(
            namespace=ns,
            name=name,
            uid=uid,
            dir=pod_dir,
            log_path=pod_dir / f"{container}.log",
            container=container,
            grace_seconds=float(spec.get("terminationGracePeriodSeconds", 30)),
            pod=pod,
        )
        run.log_path.touch()
        with self._lock:
            self._runs[uid] = run
            self._by_name[(ns, name)] = run
        run.thread = threading.Thread(
            target=self._run_pod,
            args=(run, pod),
            name=f"{self.name}-pod-{ns}/{name}",
            daemon=True,
        )
        run.thread.start()

    # The body of a pod's thread: resolve, start, wait, restart, report, clean up.
    def _run_pod(self, run: _PodRun, pod: dict[str, Any]) -> None:
        try:
            self._run_pod_inner(run, pod)
        except Exception:
            log.exception(
                "node %s: pod %s/%s failed in the agent", self.name, run.namespace, run.name
            )
        finally:
            if run.process is not None and run.alive():
                self._kill(run, 0)
            run.done.set()

    def _run_pod_inner(self, run: _PodRun, pod: dict[str, Any]) -> None:
        spec = pod["spec"]
        c = spec["containers"][0]
        restart_policy = spec.get("restartPolicy", "Always")

        env: dict[str, str] | None = None
        while env is None:
            try:
                env = self._container_env(pod, c)
            except EnvResolutionError as exc:
                self._patch_status(
                    run.namespace,
                    run.name,
                    {
                        "containerStatuses": self._container_statuses(
                            pod,
                            run,
                            {
                                "waiting": {
                                    "reason": "CreateContainerConfigError",
                                    "message": str(exc),
                                }
                            },
                        ),
                    },
                )
                if run.stop_requested.wait(1.0):
                    self._stopped(run, pod)
                    return
        argv = [expand_vars(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        cwd = Path(c["workingDir"]) if c.get("workingDir") else run.dir / "work"
        proc_env = self._process_env(env)
        while True:
            start_error = self._start_process(run, argv, cwd, proc_env)
            if start_error is None:
                self._patch_status(run.namespace, run.name, self._running_status(pod, run))
                self._wait_process(run)
            else:
                run.exit_code, run.finished_at = 128, _now()
                run.started_at = run.started_at or run.finished_at
            if run.stop_requested.is_set():
                self._stopped(run, pod)
                return
            assert run.exit_code is not None
            restart = restart_policy == "Always" or (
                restart_policy == "OnFailure" and run.exit_code != 0
            )
            if not restart:
                self._patch_status(
                    run.namespace, run.name, self._terminated_status(pod, run, start_error)
                )
                return
            run.restart_count += 1
            if run.stop_requested.wait(min(10.0, 0.5 * 2 ** min(run.restart_count, 5))):
                self._stopped(run, pod)
                return

    def _start_process(
        self, run: _PodRun, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> str | None:
        """Starts the container's process; returns an error message if it could not."""
        if not argv:
            with open(run.log_path, "ab") as f:
                f.write(b"process node: the container has no command (images are ignored)\n")
            return "the container has no command; a process node cannot use an image entrypoint"
        cwd.mkdir(parents=True, exist_ok=True)
        # A bare name is looked up on the pod's PATH, as a runtime would.
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        path = cwd / exe if exe else None  # an absolute exe stays itself
        if path is None or not (path.is_file() and os.access(path, os.X_OK)):
            msg = f'exec: "{argv[0]}": executable file not found (PATH={env.get("PATH")})'
            with open(run.log_path, "ab") as f:
                f.write(f"process node: {msg}\n".encode())
            return msg
        try:
            with open(run.log_path, "ab") as out:
                run.process = subprocess.Popen(
                    # The pod thread lives until the process ends, so the death signal
                    # only fires if the whole test process dies.
                    [*pdeathsig_prefix(any_thread=True), str(path), *argv[1:]],
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own group: SIGTERM/SIGKILL reach the children a script starts too.
                    start_new_session=True,
                )
        except OSError as exc:
            with open(run.log_path, "ab") as f:
                f.write(f"process node: cannot start {argv[0]!r}: {exc}\n".encode())
            return f"cannot start {argv[0]!r}: {exc}"
        run.started_at = _now()
        run.exit_code = None
        run.finished_at = None
        return None

    def _wait_process(self, run: _PodRun) -> None:
        proc = run.process
        assert proc is not None
        while proc.poll() is None:
            if run.stop_requested.wait(0.05):
                self._kill(run, run.grace_seconds)
                break
        rc = proc.wait()
        # A signal death reads as 128+signal, as container runtimes report it.
        run.exit_code = rc if rc >= 0 else 128 - rc
        run.finished_at = _now()

    def _kill(self, run: _PodRun, grace: float) -> None:
        proc = run.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            # The group too: a child the main process started must not outlive it.
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _stopped(self, run: _PodRun, pod: dict[str, Any]) -> None:
        """The process was stopped on request: report as the request demands."""
        if run.evicted is not None or self._stopping.is_set():
            # _terminate_runs reports these (eviction, node shutdown).
            return
        if run.deleted:
            return
        if run.exit_code is not None:
            self._patch_status(run.namespace, run.name, self._terminated_status(pod, run, None))
        self._delete_pod_now(run.namespace, run.name, run.uid)

    def _delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        assert self._v1 is not None
        try:
            self._v1.delete_namespaced_pod(
                name,
                namespace,
                body=k8s.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("node %s: deleting pod %s/%s: %s", self.name, namespace, name, exc)

    def _terminate_runs(
        self,
        runs: list[_PodRun],
        message: str,
        *,
        reason: str,
        grace_seconds: float,
        timeout: float,
    ) -> None:
        """Stops the runs' processes (SIGTERM, SIGKILL after the grace period) and marks
        their pods Failed with ``reason`` and a ``DisruptionTarget`` condition, as the
        kubelet does for node-pressure eviction and graceful node shutdown."""
        for run in runs:
            run.evicted = message
            run.grace_seconds = grace_seconds
            run.stop_requested.set()
        deadline = time.monotonic() + timeout
        for run in runs:
            run.done.wait(max(0.0, deadline - time.monotonic()))
            if run.deleted:
                continue
            now = _now()
            terminated = {
                "exitCode": run.exit_code if run.exit_code is not None else 137,
                "reason": "Error",
                "message": message,
                "startedAt": run.started_at or now,
                "finishedAt": run.finished_at or now,
                "containerID": f"process://{run.uid}",
            }
            failed = {"status": "False", "reason": "PodFailed", "lastTransitionTime": now}
            status = {
                "phase": "Failed",
                "reason": reason,
                "message": message,
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "TerminationByKubelet",
                        "message": message,
                        "lastTransitionTime": now,
                    },
                    {"type": "Ready", **failed},
                    {"type": "ContainersReady", **failed},
                ],
                "containerStatuses": self._container_statuses(
                    run.pod, run, {"terminated": terminated}
                ),
            }
            self._patch_status(run.namespace, run.name, status)

    # -- status documents -------------------------------------------------------------

    def _container_statuses(
        self,
        pod: dict[str, Any],
        run: _PodRun,
        state: dict[str, Any],
        ready: bool = False,
        last_state: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        statuses = []
        for i, c in enumerate(pod["spec"]["containers"]):
            if i == 0:
                statuses.append(
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "containerID": f"process://{run.uid}",
                        "ready": ready,
                        "started": "running" in state,
                        "restartCount": run.restart_count,
                        "state": state,
                        "lastState": last_state or {},
                    }
                )
            else:
                statuses.append(
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {
                                "reason": "NotRunByProcessNode",
                                "message": "a process node runs only the first container of a pod",
                            }
                        },
                    }
                )
        return statuses

    def _running_status(self, pod: dict[str, Any], run: _PodRun) -> dict[str, Any]:
        now = _now()
        single = len(pod["spec"]["containers"]) == 1
        cond = "True" if single else "False"
        last_state = None
        if run.restart_count and run.exit_code is not None:
            last_state = {
                "terminated": {
                    "exitCode": run.exit_code,
                    "reason": "Completed" if run.exit_code == 0 else "Error",
                    "finishedAt": run.finished_at,
                }
            }
        return {
            "phase": "Running",
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": self._pod_ip(run.uid),
            "podIPs": [{"ip": self._pod_ip(run.uid)}],
            "startTime": pod.get("status", {}).get("startTime") or now,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": cond, "lastTransitionTime": now},
                {"type": "Ready", "status": cond, "lastTransitionTime": now},
            ],
            "containerStatuses": self._container_statuses(
                pod,
                run,
                {"running": {"startedAt": run.started_at}},
                ready=True,
                last_state=last_state,
            ),
        }

    def _terminated_status(
        self, pod: dict[str, Any], run: _PodRun, start_error: str | None
    ) -> dict[str, Any]:
        now = _now()
        code = run.exit_code if run.exit_code is not None else 137
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "StartError" if start_error else ("Completed" if code == 0 else "Error"),
            "startedAt": run.started_at or now,
            "finishedAt": run.finished_at or now,
            "containerID": f"process://{run.uid}",
        }
        if start_error:
            terminated["message"] = start_error
        return {
            "phase": "Succeeded" if code == 0 else "Failed",
            "hostIP": POD_IP,
            "hostIPs": [{"ip": POD_IP}],
            "podIP": self._pod_ip(run.uid),
            "podIPs": [{"ip": self._pod_ip(run.uid)}],
            "startTime": pod.get("status", {}).get("startTime") or run.started_at or now,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": self._container_statuses(pod, run, {"terminated": terminated}),
        }

    def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert self._v1 is not None
        try:
            self._v1.patch_namespaced_pod_status(name, namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # a pod deleted meanwhile has no status to report
                log.warning("node %s: status of %s/%s: %s", self.name, namespace, name, exc.body)
        except Exception as exc:  # e.g. the control plane stopped first
            log.warning("node %s: status of %s/%s: %s", self.name, namespace, name, exc)

    # -- environment ------------------------------------------------------------------

    def _process_env(self, container_env: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {}
        env.update(self.extra_env)
        path = env.get("PATH", os.defpath)
        if self.path_prefix:
            path = os.pathsep.join([*self.path_prefix, path])
        env["PATH"] = path
        env.update(container_env)
        return env

    def _container_env(self, pod: dict[str, Any], c: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet computes it (envFrom first, then
        env in order, each value expanded against what came before)."""
        assert self._v1 is not None
        meta = pod["metadata"]
        ns = meta["namespace"]
        env: dict[str, str] = {"HOSTNAME": meta["name"]}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if ref := src.get("configMapRef"):
                data = self._read_config_map(ns, ref["name"], ref.get("optional", False))
            elif ref := src.get("secretRef"):
                data = self._read_secret(ns, ref["name"], ref.get("optional", False))
            else:
                continue
            env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in c.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand_vars(var.get("value", ""), env)
                continue
            value = self._value_from(pod, c, var["valueFrom"])
            if value is not None:
                env[name] = value
        return self._resolve_service_names(pod, env) if self.resolve_pod_dns else env

    def _value_from(
        self, pod: dict[str, Any], c: dict[str, Any], src: dict[str, Any]
    ) -> str | None:
        meta = pod["metadata"]
        ns = meta["namespace"]
        if ref := src.get("secretKeyRef"):
            data = self._read_secret(ns, ref["name"], ref.get("optional", False))
            return self._key(data, ref, f"secret {ns}/{ref['name']}")
        if ref := src.get("configMapKeyRef"):
            data = self._read_config_map(ns, ref["name"], ref.get("optional", False))
            return self._key(data, ref, f"configmap {ns}/{ref['name']}")
        if ref := src.get("fieldRef"):
            return self._field_value(pod, ref["fieldPath"])
        if ref := src.get("resourceFieldRef"):
            return self._resource_value(c, ref)
        raise EnvResolutionError(f"unsupported valueFrom {src}")

    @staticmethod
    def _key(data: dict[str, str] | None, ref: dict[str, Any], what: str) -> str | None:
        if data is None:
            return None  # optional and absent
        if ref["key"] in data:
            return data[ref["key"]]
        if ref.get("optional"):
            return None
        raise EnvResolutionError(f"couldn't find key {ref['key']} in {what}")

    def _read_secret(self, ns: str, name: str, optional: bool) -> dict[str, str] | None:
        assert self._v1 is not None
        try:
            secret = self._v1.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            if exc.status == 404:
                raise EnvResolutionError(f'secret "{name}" not found') from None
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        data.update(secret.string_data or {})
        return data

    def _read_config_map(self, ns: str, name: str, optional: bool) -> dict[str, str] | None:
        assert self._v1 is not None
        try:
            cm = self._v1.read_namespaced_config_map(name, ns)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            if exc.status == 404:
                raise EnvResolutionError(f'configmap "{name}" not found') from None
            raise
        return dict(cm.data or {})

    def _field_value(self, pod: dict[str, Any], path: str) -> str:
        meta, spec = pod["metadata"], pod["spec"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", self.name),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": self._pod_ip(meta["uid"]),
            "status.podIPs": self._pod_ip(meta["uid"]),
            "status.hostIP": POD_IP,
            "status.hostIPs": POD_IP,
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = (meta.get(path.split(".")[1]) or {}).items()
            return "\n".join(f'{k}="{v}"' for k, v in sorted(items))
        raise EnvResolutionError(f"unsupported fieldRef {path!r}")

    def _resource_value(self, c: dict[str, Any], ref: dict[str, Any]) -> str:
        kind, _, resource = ref["resource"].partition(".")
        res = c.get("resources") or {}
        value = (res.get(kind) or {}).get(resource)
        if value is None and kind == "requests":
            value = (res.get("limits") or {}).get(resource)
        if value is None:  # no limit: the node's allocatable, as the kubelet does
            value = self.resources.get(resource, "0")
        divisor = parse_quantity(ref.get("divisor", "1"))
        return str(math.ceil(parse_quantity(value) / divisor))

    # -- log server -------------------------------------------------------------------

    # -- cluster DNS stand-in (opt-in: resolve_pod_dns=True) ---------------------------
    # A real cluster gives each pod its own IP and resolves a pod's
    # `<hostname>.<subdomain>.<namespace>.svc` through the headless Service named
    # `subdomain` (cluster DNS). Here there is no DNS: each pod gets its own loopback
    # address as podIP, and an env value that is exactly such a name (MASTER_ADDR of a
    # distributed trial, say) is replaced by that pod's podIP, read from the API, before
    # the process starts; until the pod has one, the container waits
    # (CreateContainerConfigError, retried every second), as a lookup would fail.

    def _pod_ip(self, uid: str) -> str:
        if not self.resolve_pod_dns:
            return POD_IP
        with self._lock:
            if uid not in self._pod_ips:
                n = next(_pod_numbers)
                self._pod_ips[uid] = f"127.64.{(n >> 8) & 255}.{n & 255}"
            return self._pod_ips[uid]

    def _resolve_service_names(self, pod: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
        assert self._v1 is not None
        resolved = dict(env)
        for key, value in env.items():
            m = SERVICE_NAME.fullmatch(value)
            if m is None:
                continue
            host, subdomain, ns = m.groups()
            own = (
                pod["spec"].get("hostname"),
                pod["spec"].get("subdomain"),
                pod["metadata"]["namespace"],
            )
            if own == (host, subdomain, ns):  # its own name: its IP, known before it runs
                resolved[key] = self._pod_ip(pod["metadata"]["uid"])
                continue
            pods = self._v1.list_namespaced_pod(ns, _preload_content=False)
            ips = [
                (p.get("status") or {}).get("podIP")
                for p in json.loads(pods.data).get("items", [])
                if (p.get("spec") or {}).get("hostname") == host
                and (p.get("spec") or {}).get("subdomain") == subdomain
                and not p["metadata"].get("deletionTimestamp")
            ]
            found = next((ip for ip in ips if ip), None)
            if found is None:
                raise EnvResolutionError(f"{key}={value}: no pod of that name has an IP yet")
            resolved[key] = found
        return resolved

    def _start_log_server(self) -> None:
        assert self.tls is not None
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("node %s log server: " + format, node.name, *args)

            def do_GET(self) -> None:
                node._serve_logs(self)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        if self.client_ca:
            # Like a kubelet, only the apiserver (a client certificate of our CA) may ask.
            ctx.load_verify_locations(str(self.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = int(server.server_address[1])
        self._spawn(server.serve_forever, "logs")

    def _serve_logs(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        parts = url.path.strip("/").split("/")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if len(parts) != 4 or parts[0] != "containerLogs":
            h.send_error(404, "only /containerLogs/{namespace}/{pod}/{container} is served")
            return
        _, ns, pod, container = parts
        with self._lock:
            self.log_requests[pod] += 1
            run = self._by_name.get((ns, pod))
        if run is None or container != run.container:
            h.send_error(404, f"container {container} of pod {ns}/{pod} is not on this node")
            return
        follow = query.get("follow") in ("true", "1")
        tail = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Connection", "close")
        h.end_headers()
        sent = 0

        def write(data: bytes) -> bool:
            nonlocal sent
            if limit is not None:
                data = data[: max(0, limit - sent)]
            if data:
                h.wfile.write(data)
                h.wfile.flush()
                sent += len(data)
            return limit is None or sent < limit

        try:
            with open(run.log_path, "rb") as f:
                data = f.read()
                if tail is not None:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-tail:]) if tail > 0 else b""
                if not write(data) or not follow:
                    return
                while True:
                    finished = run.done.is_set()
                    chunk = f.read()
                    if chunk and not write(chunk):
                        return
                    if finished and not chunk:
                        return
                    if self._stopping.wait(0.1):
                        return
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
