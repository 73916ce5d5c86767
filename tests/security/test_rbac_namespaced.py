"""The namespaced installation (overlays/namespaced/) on the real control plane: the
operator's ServiceAccount may write in the namespaces it watches and nowhere else,
kube-system included (issue 11). Rights are asked with `kubectl auth can-i` as the
ServiceAccount itself, with a token from the TokenRequest API.

The overlay is rendered with kubectl, then moved to fresh names (the operator's
namespace, the watched namespace, the cluster-scoped objects) so that it does not
replace the cluster-wide installation other tests of the session use.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE, WATCHED = "kubetune-system", "team-a"
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def relocated(
    documents: list[dict[str, Any]], operator_ns: str, watched: str, suffix: str
) -> list[dict[str, Any]]:
    """The overlay's RBAC objects, in other namespaces and under other cluster names."""
    moves = {OPERATOR_NAMESPACE: operator_ns, WATCHED: watched}
    out = []
    for original in documents:
        if original["kind"] not in RBAC_KINDS:
            continue
        document = copy.deepcopy(original)
        metadata = document["metadata"]
        if "namespace" in metadata:
            metadata["namespace"] = moves[metadata["namespace"]]
        else:
            metadata["name"] += suffix
        if document["kind"] == "ClusterRoleBinding":
            document["roleRef"]["name"] += suffix
        for subject in document.get("subjects", []):
            subject["namespace"] = moves[subject["namespace"]]
        out.append(document)
    return out


@pytest.fixture
def installed_namespaced(control_plane: ControlPlane, namespace: str) -> tuple[Path, str]:
    """The overlay's RBAC applied with `namespace` as the watched namespace; the
    operator's kubeconfig and namespace."""
    cp = control_plane
    # `can-i` on a resource the API server does not serve says no: the CRDs come first
    # (this module may run on its own, before any other applied them).
    cp.kubectl("apply", "-k", str(REPO / "crds"), timeout=120)
    for crd in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    suffix = f"-{uuid.uuid4().hex[:6]}"
    operator_ns = f"kubetune{suffix}"
    rendered = cp.kubectl("kustomize", str(REPO / "overlays" / "namespaced")).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    cp.kubectl("create", "namespace", operator_ns)
    objects = relocated(documents, operator_ns, namespace, suffix)
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    return cp.service_account_kubeconfig(operator_ns, "kubetune-operator"), operator_ns


# (kubectl auth can-i arguments, allowed?): WATCHED is the watched namespace, OTHER a
# namespace without experiments, OPERATOR the operator's own.
CAN_I: list[tuple[str, bool]] = [
    ("create pods -n WATCHED", True),
    ("delete pods -n WATCHED", True),
    ("get pods --subresource=log -n WATCHED", True),
    ("create secrets -n WATCHED", True),
    ("create hpotrials.kubetune.dev -n WATCHED", True),
    ("patch hpoexperiments.kubetune.dev -n WATCHED", True),
    ("patch hpoexperiments.kubetune.dev --subresource=status -n WATCHED", True),
    ("create events -n WATCHED", True),
    ("get secrets -n WATCHED", False),
    ("create hpoexperiments.kubetune.dev -n WATCHED", False),
    ("create pods -n OTHER", False),
    ("delete pods -n OTHER", False),
    ("create secrets -n OTHER", False),
    ("create hpotrials.kubetune.dev -n OTHER", False),
    ("patch hpoexperiments.kubetune.dev -n OTHER", False),
    ("create events -n OTHER", False),
    ("create pods -n kube-system", False),
    ("create secrets -n kube-system", False),
    ("get secrets -n kube-system", False),
    # Cluster-wide reads for the capacity loop; node cordons; nothing else.
    ("list pods --all-namespaces", True),
    ("patch nodes", True),
    ("list customresourcedefinitions.apiextensions.k8s.io", True),
    ("create pods --all-namespaces", False),
    ("list secrets --all-namespaces", False),
    ("create namespaces", False),
    # The token key (created at first start, then read by name) and the node pools.
    ("get secrets/kubetune-token-key -n OPERATOR", True),
    ("create secrets -n OPERATOR", True),
    ("get secrets -n OPERATOR", False),
    ("get configmaps/kubetune-node-pools -n OPERATOR", True),
]


def test_namespaced_install_writes_only_in_watched_namespaces(
    control_plane: ControlPlane, namespace: str, installed_namespaced: tuple[Path, str]
) -> None:
    cp = control_plane
    kubeconfig, operator_ns = installed_namespaced
    other = f"other-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", other)
    try:
        places = {"WATCHED": namespace, "OTHER": other, "OPERATOR": operator_ns}
        wrong = []
        for question, allowed in CAN_I:
            args = [places.get(word, word) for word in question.split()]
            result = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
            if (result.returncode == 0) != allowed:
                wrong.append(f"can-i {question}: {result.stdout.strip()} (expected {allowed})")
        assert not wrong, "\n".join(wrong)
    finally:
        cp.kubectl("delete", "namespace", other, operator_ns, "--wait=false", check=False)
