"""What kubetune writes, only kubetune writes (manifests/admission.yaml, policy
`kubetune-owned-objects`), on the real control plane with a real namespace user.

A user whose Role allows HPOTrials and their status (a namespace "edit"-like role
that lists kubetune's resources) could create `<experiment>-<number>` before the
operator did: the operator's create got AlreadyExists and it took the user's object
for its trial: the HPOTrial showed the user's params (its spec is immutable), kept the
user's finalizers and conditions, and was owned by nothing, so deleting the
experiment left it, and the trial pod it owned, running. Statuses could be written
too, to be put back only afterwards. Now the API server refuses both to everyone but
the operator's ServiceAccount and cluster administrators.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane, wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "digits-asha.yaml"
MALLORY = "mallory"  # may do anything to HPOExperiments and HPOTrials, their status too
OPERATOR = ("kubetune-system", "kubetune-operator")


def trial(name: str, number: int, experiment: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOTrial",
        "metadata": {
            "name": name,
            "labels": {"kubetune.dev/experiment": experiment},
            "finalizers": ["mallory.example/hold"],
        },
        "spec": {"experiment": experiment, "number": number, "params": {"lr": 0.2}},
    }


def create(
    cp: ControlPlane, kubeconfig: Path | None, ns: str, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "create",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(document),
        kubeconfig=kubeconfig,
        check=False,
    )


def patch_status(
    cp: ControlPlane, kubeconfig: Path | None, ns: str, resource: str, patch: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "patch",
        resource,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": patch}),
        kubeconfig=kubeconfig,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """`kubectl apply -k manifests/`, without the Deployment (no operator runs here)."""
    cp = control_plane
    cp.kubectl("apply", "-k", str(REPO / "manifests"), timeout=120)
    cp.kubectl("delete", "deployment", "kubetune-operator", "-n", "kubetune-system")
    for name in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return cp


@pytest.fixture
def team(installed: ControlPlane, namespace: str) -> str:
    cp, ns = installed, namespace
    resources = "hpoexperiments.kubetune.dev,hpotrials.kubetune.dev"
    cp.kubectl(
        "create", "role", "kubetune-edit", "-n", ns, "--verb=*",
        f"--resource={resources},hpoexperiments.kubetune.dev/status,hpotrials.kubetune.dev/status",
    )  # fmt: skip
    cp.kubectl(
        "create", "rolebinding", "kubetune-edit", "-n", ns, "--role=kubetune-edit",
        f"--user={MALLORY}",
    )  # fmt: skip
    for question in (
        ("create", "hpotrials.kubetune.dev"),
        ("patch", "hpotrials.kubetune.dev", "--subresource=status"),
        ("patch", "hpoexperiments.kubetune.dev", "--subresource=status"),
    ):
        allowed = cp.kubectl("auth", "can-i", *question, "-n", ns, f"--as={MALLORY}", check=False)
        assert allowed.returncode == 0, question  # RBAC allows it: the policy must refuse
    experiment = yaml.safe_load(EXAMPLE.read_text())
    experiment["metadata"]["name"] = "exp"
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(experiment))
    uid = cp.kubectl("get", "hpoe", "exp", "-n", ns, "-o", "jsonpath={.metadata.uid}").stdout
    first = trial("exp-0", 0, "exp")
    first["metadata"]["finalizers"] = []
    first["metadata"]["ownerReferences"] = [
        {"apiVersion": "kubetune.dev/v1alpha1", "kind": "HPOExperiment", "name": "exp",
         "uid": uid, "controller": True}
    ]  # fmt: skip
    cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(first))
    return ns


def _remove_finalizers(cp: ControlPlane, ns: str) -> None:
    for name in cp.kubectl("get", "hpotrials", "-n", ns, "-o", "name").stdout.split():
        cp.kubectl(
            "patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )


def test_only_the_operator_creates_hpotrials(installed: ControlPlane, team: str) -> None:
    cp, ns = installed, team
    mallory = cp.user_kubeconfig(MALLORY)
    try:
        squat = trial("exp-7", 7, "exp")  # a trial the operator has not made yet

        def refused() -> bool:
            result = create(cp, mallory, ns, squat)
            if result.returncode == 0:  # the policy not in force yet: try again
                cp.kubectl("delete", "hpotrial", "exp-7", "-n", ns, "--wait=false")
                _remove_finalizers(cp, ns)
                return False
            return "created by the kubetune operator only" in result.stderr

        with contextlib.suppress(TimeoutError):
            wait_until(refused, 20, "the policy to take effect")
        result = create(cp, mallory, ns, squat)
        assert result.returncode != 0, "mallory created an HPOTrial"
        assert "HPOTrials are created by the kubetune operator only" in result.stderr
        assert f"{MALLORY} may not create one" in result.stderr
        assert cp.kubectl("get", "hpotrial", "exp-7", "-n", ns, check=False).returncode != 0
        # Server-side apply is a create too.
        applied = cp.kubectl(
            "apply", "--server-side", "-n", ns, "-f", "-",
            input=json.dumps(squat), kubeconfig=mallory, check=False,
        )  # fmt: skip
        assert applied.returncode != 0 and "operator only" in applied.stderr
        # The operator's ServiceAccount creates them.
        operator = cp.service_account_kubeconfig(*OPERATOR)
        made = create(cp, operator, ns, {**trial("exp-8", 8, "exp"), "metadata": {
            "name": "exp-8", "labels": {"kubetune.dev/experiment": "exp"}}})  # fmt: skip
        assert made.returncode == 0, made.stderr
    finally:
        _remove_finalizers(cp, ns)


def test_only_the_operator_writes_statuses(installed: ControlPlane, team: str) -> None:
    cp, ns = installed, team
    mallory = cp.user_kubeconfig(MALLORY)
    try:
        for resource, forged in (
            ("hpotrial/exp-0", {"value": -999, "phase": "Completed"}),
            ("hpoexperiment/exp", {"bestValue": -999, "bestTrial": "exp-0"}),
        ):
            wait_until(
                lambda r=resource, f=forged: patch_status(cp, mallory, ns, r, f).returncode != 0,
                20,
                "the policy to take effect",
            )
            result = patch_status(cp, mallory, ns, resource, forged)
            assert "is written by the kubetune operator only" in result.stderr, result.stderr
            status = (
                json.loads(cp.kubectl("get", resource, "-n", ns, "-o", "json").stdout).get("status")
                or {}
            )
            assert -999 not in status.values(), status
            # Emptying the history is a status write as well.
            emptied = patch_status(cp, mallory, ns, resource, {"history": []})
            assert emptied.returncode != 0 and "operator only" in emptied.stderr
            # The operator writes them; so may a cluster administrator (system:masters).
            operator = cp.service_account_kubeconfig(*OPERATOR)
            assert patch_status(cp, operator, ns, resource, {"phase": "Running"}).returncode == 0
            assert patch_status(cp, None, ns, resource, {"phase": "Running"}).returncode == 0
    finally:
        _remove_finalizers(cp, ns)


def test_nothing_of_an_experiment_is_orphaned_or_held(installed: ControlPlane, team: str) -> None:
    """Deleting a trial is allowed (the operator puts it back); orphaning what it owns is
    not: `kubectl delete hpotrial --cascade=orphan` left the trial's pod owned by
    nothing (the operator's new HPOTrial does not adopt it), so it outlived the
    experiment; so did the HPOTrials of an experiment deleted that way, and any trial
    given a finalizer or stripped of its owner reference."""
    cp, ns = installed, team
    mallory = cp.user_kubeconfig(MALLORY)

    def as_mallory(*args: str) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(*args, "-n", ns, kubeconfig=mallory, check=False, timeout=30)

    try:
        wait_until(
            lambda: as_mallory("delete", "hpotrial", "exp-0", "--cascade=orphan", "--wait=false")
            .stderr.find("may not orphan them") >= 0,
            20,
            "the policy to take effect",
        )  # fmt: skip
        for kind, name in (("hpotrial", "exp-0"), ("hpoexperiment", "exp")):
            refused = as_mallory("delete", kind, name, "--cascade=orphan", "--wait=false")
            assert "propagationPolicy:" in refused.stderr, refused.stderr
            assert f"{MALLORY} may not orphan them" in refused.stderr
            assert cp.kubectl("get", kind, name, "-n", ns, check=False).returncode == 0
        for patch in (
            ["--type=merge", "-p", '{"metadata":{"finalizers":["mallory.example/hold"]}}'],
            ["--type=merge", "-p", '{"metadata":{"finalizers":["orphan"]}}'],
            ["--type=json", "-p", '[{"op":"remove","path":"/metadata/ownerReferences"}]'],
        ):
            refused = as_mallory("patch", "hpotrial", "exp-0", *patch)
            assert "may not change them or add any" in refused.stderr, (patch, refused.stderr)
        # The history an HPOTrial was created with is the operator's record: neither
        # added, changed nor removed by anyone else (a removed one let a restarted
        # operator decide the trial's launch again, over the pod already running).
        # (set first as the operator sets it at creation; a cluster administrator may)
        cp.kubectl("annotate", "hpotrial", "exp-0", "-n", ns, "kubetune.dev/first-records=[]")
        for change in ("kubetune.dev/first-records=[{}]", "kubetune.dev/first-records-"):
            refused = as_mallory("annotate", "--overwrite", "hpotrial", "exp-0", change)
            assert "first-records]: the history an HPOTrial" in refused.stderr, refused.stderr
        # What is still anyone's: labels, other annotations, a plain delete.
        assert as_mallory("label", "hpotrial", "exp-0", "note=x").returncode == 0
        assert as_mallory("annotate", "hpotrial", "exp-0", "note=x").returncode == 0
        assert as_mallory("delete", "hpotrial", "exp-0", "--wait=false").returncode == 0
    finally:
        _remove_finalizers(cp, ns)
