"""The CRDs and manifests on a real API server: `kubectl apply -k manifests/`, schema and
CEL admission of experiments, immutability, and the operator's RBAC.

Every refused experiment is also refused by the pydantic models (``kubetune validate``
and the operator) at the same field, so a cluster and a laptop disagree on nothing
they both check.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.spec import SpecError, parse_experiment
from tests.cluster.controlplane import ControlPlane, wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "digits-asha.yaml"
SYSTEM = "kubetune-system"
OPERATOR = "kubetune-operator"
IMMUTABLE = "cannot change once the experiment exists; create a new experiment"


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """`kubectl apply -k manifests/`, once for the module. The operator Deployment is
    deleted afterwards: its pod must not land on a node that a later test starts."""
    cp = control_plane
    cp.kubectl("apply", "-k", str(REPO / "manifests"), timeout=120)
    for name in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    try:
        yield cp
    finally:
        cp.kubectl("delete", "deployment", OPERATOR, "-n", SYSTEM, "--ignore-not-found", "--wait")


@pytest.fixture(scope="module")
def ns(installed: ControlPlane) -> Iterator[str]:
    """One namespace for the module's experiments (they need no ServiceAccount)."""
    name = f"crd-{uuid.uuid4().hex[:6]}"
    installed.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def example(name: str) -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    return document


def apply(cp: ControlPlane, ns: str, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(document), check=False)


def test_manifests_apply_and_the_operator_pod_is_admitted(installed: ControlPlane) -> None:
    cp = installed
    # Applying again changes nothing (the base is idempotent).
    again = cp.kubectl("apply", "-k", str(REPO / "manifests"), timeout=120).stdout
    assert "configured" not in again, again
    # The Deployment's pod passes the namespace's `restricted` Pod Security admission
    # (nothing runs it here: there are no nodes).
    wait_until(
        lambda: cp.kubectl(
            "get", "pods", "-n", SYSTEM, "-l", f"app.kubernetes.io/name={OPERATOR}", "-o", "name"
        ).stdout.strip(),
        30,
        "the operator's pod to be created",
    )
    events = cp.kubectl("get", "events", "-n", SYSTEM, "-o", "json").stdout
    assert "violates PodSecurity" not in events


def test_example_is_accepted_and_printed_with_columns(installed: ControlPlane, ns: str) -> None:
    cp = installed
    result = cp.kubectl("apply", "-n", ns, "-f", str(EXAMPLE), check=False)
    assert result.returncode == 0, result.stderr
    header, row = cp.kubectl("get", "hpoexperiments", "-n", ns).stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "DONE", "TOTAL", "RUNNING", "BEST", "AGE"]
    assert row.split()[:2] == ["digits-mlp", "24"]
    wide = cp.kubectl("get", "hpoe", "-n", ns, "-o", "wide").stdout.splitlines()[0]
    assert "COST" in wide.split()
    assert "digits-mlp" in cp.kubectl("get", "kubetune", "-n", ns).stdout  # the category
    # What the API server stores (with the CRD's defaults) is still a valid experiment.
    stored = json.loads(cp.kubectl("get", "hpoe", "digits-mlp", "-n", ns, "-o", "json").stdout)
    experiment = parse_experiment(stored)
    assert experiment.spec == parse_experiment(example("digits-mlp")).spec


# Each: a change to the example, the field the API server's error names, and a piece of
# its message.
Mutation = Callable[[dict[str, Any]], Any]


def _param(index: int, **changes: Any) -> Mutation:
    return lambda spec: spec["parameters"][index].update(changes)


def _drop(*path: str | int) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


INVALID: dict[str, tuple[Mutation, str, str]] = {
    "min-not-below-max": (
        _param(0, min=0.5, max=0.3),
        "spec.parameters[0].min",
        "min must be less than max",
    ),
    "log-scale-with-min-0": (
        _param(0, min=0.0),
        "spec.parameters[0].min",
        "min must be greater than 0 with scale log",
    ),
    "unknown-field": (
        lambda spec: spec["budget"].update(maxTrails=30),
        "spec.budget.maxTrails",
        'unknown field "spec.budget.maxTrails"',
    ),
    "bad-enum": (
        lambda spec: spec["objective"].update(goal="minimise"),
        "spec.objective.goal",
        'Unsupported value: "minimise"',
    ),
    "max-resource-below-min-resource": (
        lambda spec: spec["scheduler"].update(minResource=30, maxResource=27),
        "spec.scheduler.minResource",
        "minResource must be less than maxResource",
    ),
    "fewer-than-two-rungs": (
        lambda spec: spec["scheduler"].update(minResource=10),
        "spec.scheduler.maxResource",
        "maxResource must be at least minResource * reductionFactor",
    ),
    "scheduler-without-resource": (
        _drop("scheduler", "resource"),
        "spec.scheduler.resource",
        "resource is required by scheduler asha",
    ),
    "duplicate-parameter-names": (
        _param(1, name="lr"),
        "spec.parameters",
        "parameter names must be unique",
    ),
    "max-trials-0": (
        lambda spec: spec["budget"].update(maxTrials=0),
        "spec.budget.maxTrials",
        "greater than or equal to 1",
    ),
    "int-bound-with-a-fraction": (
        _param(1, min=1.5),
        "spec.parameters[1].min",
        "min must be an integer for parameters of type int",
    ),
    "categorical-without-values": (
        _drop("parameters", 2, "values"),
        "spec.parameters[2].values",
        "Required value",
    ),
    "min-on-a-categorical": (
        _param(2, min=1),
        "spec.parameters[2].min",
        "min is only allowed for parameters of type float or int",
    ),
    "step-with-log-scale": (
        _param(0, step=0.01),
        "spec.parameters[0].step",
        "step is only allowed with scale linear",
    ),
    "grid-without-float-steps": (
        lambda spec: spec["algorithm"].update(name="grid"),
        "spec.parameters",
        "every float parameter needs a step with algorithm grid",
    ),
    "bad-max-duration": (
        lambda spec: spec["budget"].update(maxDuration="2 hours"),
        "spec.budget.maxDuration",
        "should match",
    ),
    "no-command": (
        _drop("trialTemplate", "spec", "containers", 0, "command"),
        "spec.trialTemplate.spec.containers",
        "containers[0].command is required",
    ),
    "restart-policy": (
        lambda spec: spec["trialTemplate"]["spec"].update(restartPolicy="OnFailure"),
        "spec.trialTemplate.spec.restartPolicy",
        'Unsupported value: "OnFailure"',
    ),
    "checkpoint-uri": (
        lambda spec: spec.update(checkpoints={"uri": "gs://bucket/x"}),
        "spec.checkpoints.uri",
        "should match",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_experiment_is_refused_naming_the_field(
    installed: ControlPlane, ns: str, case: str
) -> None:
    mutate, field, message = INVALID[case]
    document = example(case)
    mutate(document["spec"])

    result = apply(installed, ns, document)
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    got = installed.kubectl("get", "hpoe", case, "-n", ns, check=False)
    assert got.returncode != 0, "the object exists"

    # The models refuse it too, at the same field (or one inside it).
    with pytest.raises(SpecError) as refused:
        parse_experiment(document)
    paths = [path for path, _ in refused.value.problems]
    assert any(path.startswith(field) for path in paths), paths


def test_long_names_are_refused(installed: ControlPlane, ns: str) -> None:
    result = apply(installed, ns, example("x" * 51))
    assert result.returncode != 0
    assert "metadata.name" in result.stderr and "50" in result.stderr, result.stderr


def test_search_definition_is_immutable_but_budget_may_change(
    installed: ControlPlane, ns: str
) -> None:
    cp = installed
    assert apply(cp, ns, example("frozen")).returncode == 0

    def patch(kind: str, body: Any) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(
            "patch",
            "hpoe",
            "frozen",
            "-n",
            ns,
            f"--type={kind}",
            "-p",
            json.dumps(body),
            check=False,
        )

    refused = patch("json", [{"op": "replace", "path": "/spec/parameters/0/max", "value": 0.5}])
    assert refused.returncode != 0
    assert f"spec.parameters {IMMUTABLE}" in refused.stderr, refused.stderr

    # Re-applying the edited YAML is refused the same way, and changes nothing.
    edited = example("frozen")
    edited["spec"]["parameters"].append({"name": "dropout", "type": "float", "min": 0, "max": 1})
    edited["spec"]["budget"]["maxTrials"] = 99
    refused = apply(cp, ns, edited)
    assert refused.returncode != 0 and f"spec.parameters {IMMUTABLE}" in refused.stderr

    for field, change in {
        "objective": {"goal": "maximize"},
        "algorithm": {"seed": 8},
        "scheduler": {"maxResource": 81},
    }.items():
        refused = patch("merge", {"spec": {field: change}})
        assert refused.returncode != 0 and f"spec.{field} {IMMUTABLE}" in refused.stderr

    accepted = patch("merge", {"spec": {"budget": {"maxTrials": 40, "maxCostUSD": 12.5}}})
    assert accepted.returncode == 0, accepted.stderr
    stored = json.loads(cp.kubectl("get", "hpoe", "frozen", "-n", ns, "-o", "json").stdout)
    assert stored["spec"]["budget"]["maxTrials"] == 40
    assert stored["spec"]["parameters"] == example("frozen")["spec"]["parameters"]


def test_status_is_a_typed_subresource(installed: ControlPlane, ns: str) -> None:
    cp = installed
    assert apply(cp, ns, example("with-status")).returncode == 0
    status = {
        "phase": "Running",
        "trialsDone": 3,
        "trialsRunning": 2,
        "bestValue": 0.125,
        "costUSD": 1.5,
        "bestParams": {"lr": 0.01, "optimizer": "adam"},
        "history": [{"t": "2026-01-01T00:00:00Z", "event": "TrialStarted", "trial": 0}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "2 trials running",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    cp.kubectl(
        "patch",
        "hpoe",
        "with-status",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    row = cp.kubectl("get", "hpoe", "with-status", "-n", ns, "-o", "wide").stdout
    assert row.splitlines()[1].split()[:7] == [
        "with-status",
        "Running",
        "3",
        "24",
        "2",
        "0.125",
        "1.5",
    ]
    bad = cp.kubectl(
        "patch",
        "hpoe",
        "with-status",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Exploding"}}),
        check=False,
    )
    assert bad.returncode != 0 and "status.phase" in bad.stderr


def trial(name: str, experiment: str = "digits-mlp") -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOTrial",
        "metadata": {"name": name},
        "spec": {
            "experiment": experiment,
            "number": 0,
            "params": {"lr": 0.01, "hidden": 64, "optimizer": "sgd", "momentum": 0.9},
            "bracket": 0,
        },
    }


def test_trial_spec_is_immutable(installed: ControlPlane, ns: str) -> None:
    cp = installed
    assert apply(cp, ns, trial("digits-mlp-0")).returncode == 0
    refused = cp.kubectl(
        "patch",
        "hpot",
        "digits-mlp-0",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"params": {"lr": 0.02}}}),
        check=False,
    )
    assert refused.returncode != 0
    assert "spec is immutable" in refused.stderr, refused.stderr
    # Metadata (kopf's annotations, labels) and status still change.
    cp.kubectl("annotate", "hpot", "digits-mlp-0", "-n", ns, "kubetune.dev/note=anything")
    cp.kubectl(
        "patch",
        "hpot",
        "digits-mlp-0",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Running",
                    "value": 0.5,
                    "resource": 3,
                    "node": "gpu-1",
                    "attempt": 1,
                }
            }
        ),
    )
    header, row = cp.kubectl("get", "hpotrials", "-n", ns).stdout.splitlines()[:2]
    assert header.split() == ["NAME", "EXPERIMENT", "PHASE", "VALUE", "RESOURCE", "NODE", "AGE"]
    assert row.split()[:6] == ["digits-mlp-0", "digits-mlp", "Running", "0.5", "3", "gpu-1"]
    missing = copy.deepcopy(trial("no-experiment"))
    del missing["spec"]["experiment"]
    refused = apply(cp, ns, missing)
    assert refused.returncode != 0 and "spec.experiment" in refused.stderr


# (kubectl auth can-i arguments, allowed?) for the operator's ServiceAccount; NS is the
# test's namespace, standing for any experiment namespace.
CAN_I: list[tuple[str, bool]] = [
    ("create pods -n NS", True),
    ("delete pods -n NS", True),
    ("get pods --subresource=log -n NS", True),
    ("create hpotrials.kubetune.dev -n NS", True),
    ("patch hpoexperiments.kubetune.dev --subresource=status -n NS", True),
    ("create secrets -n NS", True),
    ("watch nodes", True),
    ("get secrets -n NS", False),
    ("list secrets -n NS", False),
    ("get secrets/kubetune-token-key -n kubetune-system", True),
    ("get secrets/another -n kubetune-system", False),
    ("list secrets -n kubetune-system", False),
    ("update pods -n NS", False),
    ("create pods --subresource=exec -n NS", False),
    ("delete nodes", False),
    ("patch nodes", True),  # cordon an empty pool node before its instance goes
    ("get configmaps/kubetune-node-pools -n kubetune-system", True),
    ("get configmaps/another -n kubetune-system", False),
    ("list configmaps -n kubetune-system", False),
    ("create deployments.apps -n NS", False),
    ("create hpoexperiments.kubetune.dev -n NS", False),
    ("update hpoexperiments.kubetune.dev -n NS", False),
    ("delete hpoexperiments.kubetune.dev -n NS", False),
    ("create clusterroles.rbac.authorization.k8s.io", False),
    ("create serviceaccounts --subresource=token -n NS", False),
]


def test_operator_service_account_has_least_privilege(installed: ControlPlane, ns: str) -> None:
    cp = installed
    kubeconfig = cp.service_account_kubeconfig(SYSTEM, OPERATOR)
    wrong = []
    for question, allowed in CAN_I:
        args = question.replace("NS", ns).split()
        result = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
        if (result.returncode == 0) != allowed:
            wrong.append(f"can-i {question}: {result.stdout.strip()} (expected {allowed})")
    assert not wrong, "\n".join(wrong)

    # And for real: it can create a trial, and cannot read a user's Secret.
    assert apply_as(cp, kubeconfig, ns, trial("made-by-operator")).returncode == 0
    cp.kubectl("create", "secret", "generic", "users-own", "-n", ns, "--from-literal=a=b")
    refused = cp.kubectl("get", "secret", "users-own", "-n", ns, kubeconfig=kubeconfig, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()


def apply_as(
    cp: ControlPlane, kubeconfig: Path, ns: str, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=yaml.safe_dump(document),
        kubeconfig=kubeconfig,
        check=False,
    )
