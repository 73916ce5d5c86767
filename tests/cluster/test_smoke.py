"""Smoke suite: proves the test cluster is a real one (schemas, RBAC, garbage
collection, scheduling, pods that run) before anything builds on it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .controlplane import ControlPlane, wait_until
from .kwok import COMPLETE_LABEL, DELAY_ANNOTATION, Kwok
from .process_node import ProcessNode, Taint

pytestmark = pytest.mark.cluster

TESTDATA = Path(__file__).parent / "testdata"


def pod_body(
    name: str, command: list[str], *, node_selector: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    container = {"name": "main", "image": "kubetune/ignored:latest", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **spec.pop("metadata", {})},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            "nodeSelector": node_selector or {},
            **spec,
        },
    }


def wait_phase(
    v1: k8s.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 30
) -> k8s.V1Pod:
    def check() -> k8s.V1Pod | None:
        pod = v1.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None

    return wait_until(check, timeout, f"pod {ns}/{name} to reach {phases}")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def on(node: ProcessNode) -> dict[str, str]:
    return {"kubernetes.io/hostname": node.name}


def test_crd_schema_and_cel_are_enforced(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    cp.kubectl("apply", "-f", str(TESTDATA / "widget-crd.yaml"))
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.smoke.kubetune.dev"
    )
    cp.kubectl("apply", "-n", namespace, "-f", str(TESTDATA / "widget-good.yaml"))
    got = cp.kubectl("get", "widget", "good", "-n", namespace, "-o", "jsonpath={.spec.replicas}")
    assert got.stdout == "3"

    bad = cp.kubectl(
        "apply", "-n", namespace, "-f", str(TESTDATA / "widget-bad-type.yaml"), check=False
    )
    assert bad.returncode != 0
    assert "spec.replicas" in bad.stderr, bad.stderr
    assert "integer" in bad.stderr, bad.stderr

    bad = cp.kubectl(
        "apply", "-n", namespace, "-f", str(TESTDATA / "widget-bad-cel.yaml"), check=False
    )
    assert bad.returncode != 0
    assert "spec.color" in bad.stderr, bad.stderr
    assert "more than 5 replicas need color red" in bad.stderr, bad.stderr


def test_process_node_runs_pods_to_completion(
    control_plane: ControlPlane, k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    v1.create_namespaced_secret(
        namespace, {"metadata": {"name": "s"}, "stringData": {"token": "sekret"}}
    )
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"lr": "0.01"}})
    script = (
        "import os, sys; print('hello', os.environ['POD'], os.environ['TOKEN'], "
        "os.environ['LR'], os.environ['NODE'], sys.argv[1])"
    )
    env = [
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "LR", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "lr"}}},
        {"name": "ARG", "value": "from-$(LR)"},
    ]
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "ok",
            ["python", "-c", script],
            node_selector=on(process_node),
            container={"env": env, "args": ["$(ARG)"]},
        ),
    )
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "fails",
            ["python", "-c", "import sys; print('bye'); sys.exit(3)"],
            node_selector=on(process_node),
        ),
    )

    pod = wait_phase(v1, namespace, "ok", {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == process_node.name
    assert pod.status.pod_ip == "127.0.0.1"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (0, "Completed")
    assert term.started_at is not None and term.finished_at is not None
    expected = f"hello ok sekret 0.01 {process_node.name} from-0.01"
    assert expected in process_node.logs(namespace, "ok")
    # Through the apiserver, which proxies to the node's log endpoint over TLS.
    assert expected in v1.read_namespaced_pod_log("ok", namespace)
    assert expected in control_plane.kubectl("logs", "-n", namespace, "ok").stdout

    pod = wait_phase(v1, namespace, "fails", {"Succeeded", "Failed"})
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")
    assert "bye" in v1.read_namespaced_pod_log("fails", namespace)


def test_deleting_a_running_pod_terminates_its_process(
    k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    sleeper = "import time; print('up', flush=True); time.sleep(600)"
    # This one ignores SIGTERM: only the SIGKILL after the grace period ends it.
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(600)"
    )
    v1.create_namespaced_pod(
        namespace, pod_body("sleeper", ["python", "-c", sleeper], node_selector=on(process_node))
    )
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "stubborn",
            ["python", "-c", stubborn],
            node_selector=on(process_node),
            terminationGracePeriodSeconds=1,
        ),
    )
    pids = {}
    for name in ("sleeper", "stubborn"):
        wait_phase(v1, namespace, name, {"Running"})
        wait_until(lambda n=name: "up" in process_node.logs(namespace, n), 15, f"{name} up")
        pid = process_node.pid(namespace, name)
        assert pid is not None and not pid_gone(pid)
        pids[name] = pid

    t0 = time.monotonic()
    for name in pids:
        v1.delete_namespaced_pod(name, namespace)

    def gone(name: str) -> bool:
        try:
            v1.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    for name, pid in pids.items():
        wait_until(lambda n=name: gone(n), 20, f"pod {name} to be deleted")
        assert pid_gone(pid), f"process of {name} still runs"
    assert time.monotonic() - t0 < 15


def test_spot_interruption_evicts_pods_and_removes_the_node(
    k8s_api: Any, namespace: str, process_node_factory: Any
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    node = process_node_factory(
        gpus=4,
        labels={"kubetune.dev/node-pool": "gpu-spot"},
        taints=[Taint("nvidia.com/gpu", "true", "NoSchedule")],
    )
    trial = pod_body(
        "trial",
        ["python", "-c", "import time; print('training', flush=True); time.sleep(600)"],
        node_selector={"kubetune.dev/node-pool": "gpu-spot"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    )
    v1.create_namespaced_pod(namespace, trial)
    v1.create_namespaced_pod(namespace, {**trial, "metadata": {"name": "other"}})
    for name in ("trial", "other"):
        assert wait_phase(v1, namespace, name, {"Running"}).spec.node_name == node.name
    pid = node.pid(namespace, "trial")
    assert pid is not None

    node.evict(namespace, "other")  # node-pressure style: the node stays
    pod = v1.read_namespaced_pod("other", namespace)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    v1.read_node(node.name)

    node.interrupt()
    pod = v1.read_namespaced_pod("trial", namespace)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "Evicted"
    disruption = [c for c in pod.status.conditions if c.type == "DisruptionTarget"]
    assert disruption and disruption[0].status == "True"
    assert pid_gone(pid)
    with pytest.raises(ApiException) as exc:
        v1.read_node(node.name)
    assert exc.value.status == 404


def test_garbage_collector_deletes_owned_objects(k8s_api: Any, namespace: str) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    owner = v1.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "owned",
            ["true"],
            node_selector={"kubetune.dev/node-pool": "nowhere"},
            metadata={"ownerReferences": [ref]},
        ),
    )
    v1.read_namespaced_pod("owned", namespace)
    v1.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        try:
            v1.read_namespaced_pod("owned", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(collected, 30, "the garbage collector to delete the owned pod")


def test_rbac_is_enforced_for_a_service_account(
    control_plane: ControlPlane, k8s_api: Any, namespace: str
) -> None:
    cp = control_plane
    rbac = k8s.RbacAuthorizationV1Api(k8s_api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-cm"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "cm-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    sa_config = cp.service_account_kubeconfig(namespace, "reader", create=True)

    allowed = cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=sa_config)
    assert "kube-root-ca.crt" in allowed.stdout
    denied = cp.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_config, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    assert f"system:serviceaccount:{namespace}:reader" in denied.stderr

    api = cp.api_client(sa_config)
    try:
        v1 = k8s.CoreV1Api(api)
        assert v1.list_namespaced_config_map(namespace).items
        with pytest.raises(ApiException) as exc:
            v1.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}})
        assert exc.value.status == 403
    finally:
        api.close()


def test_pod_that_fits_no_node_stays_unschedulable(
    k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    # A node exists (without GPUs), so the scheduler names the resource that is short.
    v1 = k8s.CoreV1Api(k8s_api)
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "too-big", ["true"], container={"resources": {"limits": {"nvidia.com/gpu": "64"}}}
        ),
    )

    def unschedulable() -> Any:
        pod = v1.read_namespaced_pod("too-big", namespace)
        return [
            c
            for c in pod.status.conditions or []
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        ]

    cond = wait_until(unschedulable, 30, "PodScheduled=False/Unschedulable")
    assert "nvidia.com/gpu" in cond[0].message
    pod = v1.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_kwok_runs_a_hundred_pods(k8s_api: Any, namespace: str, kwok: Kwok) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    pool = {"kubetune.dev/node-pool": f"kwok-{namespace[-6:]}"}
    kwok.create_nodes(4, prefix=f"kwok-{namespace[-6:]}", gpus=8, labels=pool)
    t0 = time.monotonic()
    for i in range(100):
        v1.create_namespaced_pod(namespace, pod_body(f"p{i}", ["train"], node_selector=pool))
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "finisher",
            ["train"],
            node_selector=pool,
            metadata={
                "labels": {COMPLETE_LABEL: "true"},
                "annotations": {DELAY_ANNOTATION: "500ms"},
            },
        ),
    )

    def running() -> bool:
        pods = v1.list_namespaced_pod(namespace, label_selector=f"!{COMPLETE_LABEL}").items
        return len(pods) == 100 and all(p.status.phase == "Running" for p in pods)

    wait_until(running, 90, "100 kwok pods to be Running", interval=0.5)
    elapsed = time.monotonic() - t0
    print(f"100 pods Running on kwok nodes in {elapsed:.1f}s")
    pod = wait_phase(v1, namespace, "finisher", {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
