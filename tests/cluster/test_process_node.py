"""The process node's kubelet behaviours beyond the smoke suite: what later end-to-end
tests rely on when trials restart, wait for secrets, stream logs, or lose their node."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .controlplane import ControlPlane, wait_until
from .process_node import ProcessNode, expand_vars
from .test_smoke import on, pod_body, wait_phase


def test_expand_vars_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "x"}
    assert expand_vars("$(A)-$(B)-$(C)-$$(A)-$", env) == "1-x-$(C)-$(A)-$"


@pytest.mark.cluster
def test_on_failure_restarts_until_success(
    k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    # Fails on the first run, succeeds on the second (the marker file survives).
    script = (
        "import os, sys; p = 'attempt'; first = not os.path.exists(p); open(p, 'a').close(); "
        "print('first' if first else 'second'); sys.exit(1 if first else 0)"
    )
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "retry",
            ["python", "-c", script],
            node_selector=on(process_node),
            restartPolicy="OnFailure",
        ),
    )
    pod = wait_phase(v1, namespace, "retry", {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].restart_count == 1
    assert process_node.logs(namespace, "retry").split() == ["first", "second"]


@pytest.mark.cluster
def test_missing_secret_waits_then_runs(
    k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}]
    v1.create_namespaced_pod(
        namespace,
        pod_body(
            "waits",
            ["python", "-c", "import os; print(os.environ['T'])"],
            node_selector=on(process_node),
            container={"env": env},
        ),
    )

    def config_error() -> bool:
        pod = v1.read_namespaced_pod("waits", namespace)
        statuses = pod.status.container_statuses or []
        waiting = statuses and statuses[0].state.waiting
        return bool(waiting and waiting.reason == "CreateContainerConfigError")

    wait_until(config_error, 20, "CreateContainerConfigError")
    v1.create_namespaced_secret(
        namespace, {"metadata": {"name": "late"}, "stringData": {"t": "ok"}}
    )
    assert wait_phase(v1, namespace, "waits", {"Succeeded", "Failed"}).status.phase == "Succeeded"
    assert process_node.logs(namespace, "waits").strip() == "ok"


@pytest.mark.cluster
def test_missing_executable_is_a_start_error(
    k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    v1.create_namespaced_pod(
        namespace,
        pod_body("nocmd", ["no-such-binary-kubetune"], node_selector=on(process_node)),
    )
    pod = wait_phase(v1, namespace, "nocmd", {"Succeeded", "Failed"})
    term = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, term.exit_code, term.reason) == ("Failed", 128, "StartError")


@pytest.mark.cluster
def test_kubectl_logs_follow_streams_until_exit(
    control_plane: ControlPlane, k8s_api: Any, namespace: str, process_node: ProcessNode
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    script = "import time\nfor i in range(4):\n    print('step', i, flush=True); time.sleep(0.5)"
    v1.create_namespaced_pod(
        namespace, pod_body("talker", ["python", "-c", script], node_selector=on(process_node))
    )
    wait_phase(v1, namespace, "talker", {"Running", "Succeeded"})
    t0 = time.monotonic()
    out = control_plane.kubectl("logs", "-f", "-n", namespace, "talker", timeout=30).stdout
    assert [line for line in out.splitlines() if line] == [f"step {i}" for i in range(4)]
    assert time.monotonic() - t0 < 20
    tail = v1.read_namespaced_pod_log("talker", namespace, tail_lines=1)
    assert tail.strip() == "step 3"


@pytest.mark.cluster
def test_stopping_the_node_fails_its_pods_as_a_node_shutdown(
    k8s_api: Any, namespace: str, process_node_factory: Any
) -> None:
    v1 = k8s.CoreV1Api(k8s_api)
    node = process_node_factory()
    v1.create_namespaced_pod(
        namespace,
        pod_body("long", ["python", "-c", "import time; time.sleep(600)"], node_selector=on(node)),
    )
    wait_phase(v1, namespace, "long", {"Running"})
    pid = node.pid(namespace, "long")
    node.stop()
    pod = v1.read_namespaced_pod("long", namespace)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Terminated")
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # A terminal pod on a gone node is deleted at once (no kubelet needs to confirm).
    v1.delete_namespaced_pod("long", namespace)

    def gone() -> bool:
        try:
            v1.read_namespaced_pod("long", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, 5, "the terminal pod to be deleted")
