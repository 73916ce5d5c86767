"""The kustomize base renders, and what it grants and runs is what was reviewed (no
cluster needed: `kubectl kustomize` renders offline)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.engine import Engine
from kubetune.names import token_block, token_block_secret_name, token_secret_name
from kubetune.operator import main as operator_main
from kubetune.spec import load_experiment
from tests.cluster.controlplane import Binaries
from tests.prereq import missing

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kubetune-system"

# The operator's rights, reviewed: any change to manifests/rbac.yaml must change this
# table too (and say why in rbac.yaml).
CLUSTER_RULES = {
    ("kubetune.dev", "hpoexperiments"): {"get", "list", "watch", "patch"},
    ("kubetune.dev", "hpoexperiments/status"): {"get", "patch", "update"},
    ("kubetune.dev", "hpotrials"): {"get", "list", "watch", "create", "patch", "delete"},
    ("kubetune.dev", "hpotrials/status"): {"get", "patch", "update"},
    ("kubetune.dev", "hpoexperiments/finalizers"): {"update"},
    ("kubetune.dev", "hpotrials/finalizers"): {"update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"create"},
    ("", "services"): {"get", "create"},  # a gang's headless Service
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "nodes"): {"get", "list", "watch", "patch"},  # cordon before scale-down
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# What the namespaced installation keeps cluster-wide (overlays/namespaced/): reads for
# the capacity loop and kopf, and node cordons. Everything else is per namespace.
NAMESPACED_CLUSTER_RULES = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "nodes"): {"get", "list", "watch", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
WATCHED = "team-a"


def kubectl() -> str:
    binaries = Binaries.locate()
    if binaries.kubectl.exists():
        return str(binaries.kubectl)
    if system := shutil.which("kubectl"):
        return system
    missing("no kubectl (tests/cluster/build.sh builds one)")


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(REPO / "manifests")


@pytest.fixture(scope="module")
def namespaced() -> list[dict[str, Any]]:
    return render(REPO / "overlays" / "namespaced")


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs of a Role or ClusterRole, with no wildcard or name."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource, *rule["verbs"])
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def one(rendered: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in rendered if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_base_has_exactly_these_objects(rendered: list[dict[str, Any]]) -> None:
    got = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert got == sorted(
        [
            ("Namespace", NAMESPACE),
            ("CustomResourceDefinition", "hpoexperiments.kubetune.dev"),
            ("CustomResourceDefinition", "hpotrials.kubetune.dev"),
            ("ServiceAccount", "kubetune-operator"),
            ("ClusterRole", "kubetune-operator"),
            ("ClusterRoleBinding", "kubetune-operator"),
            ("Role", "kubetune-operator"),
            ("RoleBinding", "kubetune-operator"),
            ("Deployment", "kubetune-operator"),
            ("Service", "kubetune-operator"),
            ("ValidatingAdmissionPolicy", "kubetune-experiment-author"),
            ("ValidatingAdmissionPolicyBinding", "kubetune-experiment-author"),
            ("ValidatingAdmissionPolicy", "kubetune-operator-scope"),
            ("ValidatingAdmissionPolicyBinding", "kubetune-operator-scope"),
            ("ValidatingAdmissionPolicy", "kubetune-owned-objects"),
            ("ValidatingAdmissionPolicyBinding", "kubetune-owned-objects"),
            ("ValidatingAdmissionPolicy", "kubetune-warm-start-reader"),
            ("ValidatingAdmissionPolicyBinding", "kubetune-warm-start-reader"),
        ]
    )
    for document in rendered:
        if document["kind"] not in CLUSTER_SCOPED:
            assert document["metadata"]["namespace"] == NAMESPACE, document["kind"]


def test_the_base_carries_the_generated_crds(rendered: list[dict[str, Any]]) -> None:
    for name in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        checked_in = yaml.safe_load((REPO / "crds" / f"{name}.yaml").read_text())
        got = one(rendered, "CustomResourceDefinition", name)
        got["metadata"]["labels"].pop("app.kubernetes.io/part-of")
        checked_in["metadata"]["labels"].pop("app.kubernetes.io/part-of")
        assert got == checked_in


def test_cluster_role_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    role = one(rendered, "ClusterRole", "kubetune-operator")
    assert granted(role) == CLUSTER_RULES
    binding = one(rendered, "ClusterRoleBinding", "kubetune-operator")
    assert binding["roleRef"]["name"] == "kubetune-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubetune-operator", "namespace": NAMESPACE}
    ]


def test_role_reads_only_the_token_key(rendered: list[dict[str, Any]]) -> None:
    role = one(rendered, "Role", "kubetune-operator")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["kubetune-token-key"],
            "verbs": ["get"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["kubetune-node-pools"],
            "verbs": ["get"],
        },
    ]
    binding = one(rendered, "RoleBinding", "kubetune-operator")
    assert binding["subjects"][0]["name"] == "kubetune-operator"


def test_namespaced_overlay_writes_only_in_the_watched_namespaces(
    rendered: list[dict[str, Any]], namespaced: list[dict[str, Any]]
) -> None:
    """The base's objects, with the ClusterRole cut to cluster-wide reads (and node
    cordons), the rest of its rights in a Role per watched namespace, and the
    operator told to watch those namespaces only."""
    base = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    extra = {
        ("Role", "kubetune-operator-experiments"),
        ("RoleBinding", "kubetune-operator-experiments"),
    }
    assert {(d["kind"], d["metadata"]["name"]) for d in namespaced} == base | extra

    cluster = one(namespaced, "ClusterRole", "kubetune-operator")
    assert granted(cluster) == NAMESPACED_CLUSTER_RULES
    (role,) = [
        d for d in namespaced if d["kind"] == "Role" and d["metadata"]["namespace"] == WATCHED
    ]
    # Exactly the base's rights that are not cluster-wide ones, now in one namespace.
    assert granted(role) == {
        key: verbs
        for key, verbs in CLUSTER_RULES.items()
        if key not in NAMESPACED_CLUSTER_RULES and key[1] != "namespaces"
    } | {("", "pods"): CLUSTER_RULES[("", "pods")]}
    (binding,) = [
        d
        for d in namespaced
        if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == WATCHED
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubetune-operator", "namespace": NAMESPACE}
    ]
    for document in namespaced:
        if document["kind"] not in CLUSTER_SCOPED:
            assert document["metadata"]["namespace"] in (NAMESPACE, WATCHED), document["kind"]

    (container,) = one(namespaced, "Deployment", "kubetune-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    assert f"--namespace={WATCHED}" in container["args"]
    assert "--namespace-all" not in container["args"]
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    parsed = parser.parse_args(container["args"][1:])
    assert parsed.namespace == [WATCHED] and not parsed.namespace_all
    # Everything else is the base's, unchanged.
    changed = {
        ("ClusterRole", "kubetune-operator"),
        ("Role", "kubetune-operator"),
        ("Deployment", "kubetune-operator"),
    }
    key_role = one(namespaced, "Role", "kubetune-operator")
    assert key_role["rules"][-1] == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["create"],
    }
    assert (
        key_role["rules"][:-1]
        == one(render(REPO / "manifests"), "Role", "kubetune-operator")["rules"]
    )
    for document in render(REPO / "manifests"):  # (another test edits `rendered`)
        key = (document["kind"], document["metadata"]["name"])
        if key not in changed:
            assert one(namespaced, *key) == document, key


def test_admission_policy_knows_kubetunes_secret_names(rendered: list[dict[str, Any]]) -> None:
    """The policy refuses references to trial tokens by name: its pattern must match
    the names the operator gives them, and the token key's name."""
    policy = one(rendered, "ValidatingAdmissionPolicy", "kubetune-experiment-author")
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    (pattern,) = re.findall(r"matches\('([^']+)'\)", variables["kubetuneSecretRefs"])
    example = load_experiment(REPO / "manifests" / "examples" / "digits-asha.yaml")
    engine = Engine(example.spec, example.metadata.name)
    for number in (0, 7, 123, 700):
        trial = engine.trial_name(number)
        assert re.fullmatch(pattern, token_secret_name(trial))  # older operators'
        assert re.fullmatch(pattern, token_block_secret_name(engine.experiment, token_block(trial)))
    for users in ("db-password", "token", "digits-mlp-token", "x-1-tokens", "api-tokens-1"):
        assert not re.fullmatch(pattern, users), users
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    key = parser.get_default("token_key_secret").split("/")[1]
    assert f"r.name == '{key}'" in variables["kubetuneSecretRefs"]

    scope = one(rendered, "ValidatingAdmissionPolicy", "kubetune-operator-scope")
    (condition,) = scope["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{NAMESPACE}:kubetune-operator'" in condition["expression"]
    owned = one(rendered, "ValidatingAdmissionPolicy", "kubetune-owned-objects")
    condition = owned["spec"]["matchConditions"][0]["expression"]
    assert f"'system:serviceaccount:{NAMESPACE}:kubetune-operator'" in condition
    for name in (
        "kubetune-experiment-author",
        "kubetune-operator-scope",
        "kubetune-owned-objects",
        "kubetune-warm-start-reader",
    ):
        binding = one(rendered, "ValidatingAdmissionPolicyBinding", name)
        assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}
        assert one(rendered, "ValidatingAdmissionPolicy", name)["spec"]["failurePolicy"] == "Fail"


def test_deployment(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment", "kubetune-operator")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    pod = deployment["template"]["spec"]
    assert pod["serviceAccountName"] == "kubetune-operator"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "kubetune/operator:latest"
    assert container["command"] == ["kubetune"]
    assert container["args"] == [
        "operator",
        "--namespace-all",
        "--listen=0.0.0.0:8080",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--endpoint-url=http://kubetune-operator.kubetune-system.svc:8080",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ports[container["livenessProbe"]["httpGet"]["port"]] == 8081
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == 8080
    assert set(container["resources"]) == {"requests", "limits"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_service(rendered: list[dict[str, Any]]) -> None:
    service = one(rendered, "Service", "kubetune-operator")["spec"]
    assert service["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    deployment = one(rendered, "Deployment", "kubetune-operator")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()


def test_example_is_valid_and_matches_the_local_one() -> None:
    cluster = load_experiment(REPO / "manifests" / "examples" / "digits-asha.yaml")
    local = load_experiment(REPO / "trial_image" / "examples" / "digits-asha.yaml")
    assert cluster.spec.checkpoints is not None
    assert cluster.spec.checkpoints.uri.startswith("s3://")
    for field in ("objective", "parameters", "algorithm", "scheduler", "budget"):
        assert getattr(cluster.spec, field) == getattr(local.spec, field), field


def test_kind_config_has_a_tainted_gpu_spot_worker() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker"]
    worker = config["nodes"][1]
    assert worker["labels"] == {
        "kubetune.dev/node-pool": "gpu-spot",
        "node.kubernetes.io/instance-type": "g5.xlarge",
    }
    (patch,) = [yaml.safe_load(p) for p in worker["kubeadmConfigPatches"]]
    assert patch["kind"] == "JoinConfiguration"
    assert patch["nodeRegistration"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    ]
