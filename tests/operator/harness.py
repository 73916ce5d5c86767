"""Running the real operator against the test control plane, as its own process.

The operator runs with the kubeconfig of the `kubetune-operator` ServiceAccount that
`kubectl apply -k manifests/` creates, so every test also proves the RBAC is enough.
Trial pods run on ProcessNodes (the kubelet stand-in) as local processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubetune.ports import free_port
from tests.cluster.controlplane import pdeathsig_prefix
from tests.cluster.process_node import Taint

REPO = Path(__file__).resolve().parents[2]
TRIALS = REPO / "tests" / "local" / "trials"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# What process nodes that stand in for GPU nodes carry (the example tolerates GPU_TAINT).
GPU_NODE_TAINTS = [Taint(GPU_TAINT["key"], "true")]


def operator_env(test_defaults: bool = True) -> dict[str, str]:
    """The operator's environment in tests: reports no decision reads are written
    within a second (the default is 5 s), so that tests that wait for a trial's
    `status.step` see it move as they used to; a test may set its own. Benchmarks run
    the operator as shipped (`test_defaults=False`)."""
    env = dict(os.environ)
    if test_defaults:
        env.setdefault("KUBETUNE_REPORT_WRITE_SECONDS", "1")
    return env


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        extra_args: Sequence[str] = (),
        banner: bool = True,
        test_defaults: bool = True,
    ) -> None:
        """`banner`: a line in the log at each start (off when every line must be JSON);
        `test_defaults`: see `operator_env`."""
        self.kubeconfig = kubeconfig
        self.test_defaults = test_defaults
        self.extra_args = list(extra_args)
        self.banner = banner
        self.checkpoints = (workdir / "checkpoints").as_uri()
        self.port = free_port()
        self.key_file = workdir / "token.key"
        self.key_file.write_bytes(os.urandom(16).hex().encode())
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.starts += 1
        if self.banner:
            log.write(f"\n===== operator start {self.starts} =====\n".encode())
        self.process = subprocess.Popen(
            [
                *pdeathsig_prefix(),  # a killed test or bench leaves no operator behind
                sys.executable,
                "-m",
                "kubetune.cli",
                "operator",
                "--namespace-all",
                *self.extra_args,
                f"--kubeconfig={self.kubeconfig}",
                f"--listen=127.0.0.1:{self.port}",
                f"--endpoint-url={self.endpoint}",
                f"--token-key-file={self.key_file}",
                f"--default-checkpoint-uri={self.checkpoints}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=operator_env(self.test_defaults),
        )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def experiment(
    name: str,
    *,
    command: list[str] | None = None,
    max_trials: int = 6,
    parallel: int = 2,
    scheduler: dict[str, Any] | None = None,
    checkpoints: str | None = None,
    sleep: float = 0.05,
) -> dict[str, Any]:
    container = {
        "name": "trial",
        "image": "kubetune/trial:latest",
        "command": command or ["python", str(TRIALS / "quadratic.py"), f"--sleep={sleep}"],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    spec: dict[str, Any] = {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": [
            {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
            {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
        ],
        "algorithm": {"name": "tpe", "seed": 5},
        "scheduler": scheduler
        or {"name": "asha", "resource": "step", "minResource": 1, "maxResource": 9},
        "budget": {"maxTrials": max_trials, "parallelTrials": parallel},
        "trialTemplate": {
            "spec": {"tolerations": [GPU_TAINT], "containers": [container]},
        },
    }
    if checkpoints:
        spec["checkpoints"] = {"uri": checkpoints}
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float, diagnostics: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnostics()}")


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def apply(control_plane: Any, namespace: str, document: dict[str, Any]) -> None:
    # JSON, not YAML: kubectl's YAML 1.1 would read a parameter named `y` as a boolean.
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def get(control_plane: Any, namespace: str, kind: str, name: str = "") -> Any:
    args = ["get", kind, "-n", namespace, "-o", "json"] + ([name] if name else [])
    return json.loads(control_plane.kubectl(*args).stdout)


def status(control_plane: Any, namespace: str, name: str) -> dict[str, Any]:
    return get(control_plane, namespace, "hpoexperiment", name).get("status") or {}


def finished(control_plane: Any, namespace: str, name: str) -> dict[str, Any] | None:
    found = status(control_plane, namespace, name)
    return found if found.get("phase") in ("Succeeded", "Failed") else None


def wait_finished(
    control_plane: Any, namespace: str, name: str, operator: OperatorProcess, timeout: float = 180
) -> dict[str, Any]:
    """The experiment's status once it has Succeeded or Failed (the operator's log on time-out)."""
    return wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, name),
        timeout,
        operator.log_tail,
    )


def trials(control_plane: Any, namespace: str) -> list[dict[str, Any]]:
    return get(control_plane, namespace, "hpotrials")["items"]


def api_requests(control_plane: Any, resource: str, verb: str, subresource: str = "") -> float:
    """Requests kube-apiserver has answered (refused ones too), by its own counter
    (`apiserver_request_total`), summed over codes and scopes."""
    text = control_plane.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for labels, count in re.findall(r"^apiserver_request_total\{([^}]*)\}\s+(\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        wanted = {"resource": resource, "verb": verb, "subresource": subresource}
        if all(found.get(k, "") == v for k, v in wanted.items()):
            total += float(count)
    return total
