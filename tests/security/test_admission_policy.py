"""No more rights through kubetune than without it (issue 11, the confused deputy): the
project's manifests, applied with kubectl on the real control plane, refuse at
`kubectl apply` an HPOExperiment whose author could not create the pods it describes.

Users are real: client certificates of the cluster's CA, with namespaced Roles made by
`kubectl create role` / `kubectl create rolebinding`, their rights checked with
`kubectl auth can-i --as=...`. Pod Security refusals are checked against the API
server's own PodSecurity admission: the pod the template describes is refused (or
admitted) by it as well.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.names import token_block_secret_name, token_secret_name
from tests.cluster.controlplane import ControlPlane, wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "digits-asha.yaml"
OPERATOR_SA = ("kubetune-system", "kubetune-operator")
ALICE = "alice"  # may create and edit HPOExperiments, nothing else
BOB = "bob"  # also pods, his own Secret and ConfigMap by name
BOBS_SECRET, BOBS_CONFIG = "bobs-password", "bobs-config"
OTHERS_SECRET, OTHERS_CONFIG = "db-root-password", "payroll-config"


def _policy_in_force(cp: ControlPlane) -> bool:
    probe = cp.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        "kube-system",
        "-f",
        "-",
        input=yaml.safe_dump(example("probe")),
        check=False,
    )
    return "not allowed in kube-system" in probe.stderr


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """`kubectl apply -k manifests/`; the Deployment is deleted (no operator runs here).
    Admission policies take effect a moment after they are stored: wait for that, but
    without failing here, so that each test says what it found missing."""
    cp = control_plane
    cp.kubectl("apply", "-k", str(REPO / "manifests"), timeout=120)
    cp.kubectl("delete", "deployment", "kubetune-operator", "-n", "kubetune-system")
    for name in ("hpoexperiments.kubetune.dev", "hpotrials.kubetune.dev"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: _policy_in_force(cp), 20, "the admission policy to take effect")
    return cp


def grant(
    cp: ControlPlane, ns: str, user: str, role: str, verbs: str, resource: str, *names: str
) -> None:
    cp.kubectl(
        "create",
        "role",
        role,
        "-n",
        ns,
        f"--verb={verbs}",
        f"--resource={resource}",
        *(f"--resource-name={n}" for n in names),
    )
    cp.kubectl("create", "rolebinding", role, "-n", ns, f"--role={role}", f"--user={user}")


def can_i(cp: ControlPlane, user: str, *question: str) -> bool:
    return cp.kubectl("auth", "can-i", *question, f"--as={user}", check=False).returncode == 0


@pytest.fixture
def team(installed: ControlPlane, namespace: str) -> Iterator[str]:
    """A namespace where alice may only write HPOExperiments, and bob may also create
    pods and read his own Secret and ConfigMap (by name)."""
    cp, ns = installed, namespace
    for user in (ALICE, BOB):
        grant(
            cp,
            ns,
            user,
            f"{user}-experiments",
            "get,list,create,update,patch",
            "hpoexperiments.kubetune.dev",
        )
    grant(cp, ns, BOB, "bob-pods", "create", "pods")
    grant(cp, ns, BOB, "bob-secret", "get", "secrets", BOBS_SECRET)
    grant(cp, ns, BOB, "bob-config", "get", "configmaps", BOBS_CONFIG)
    for name in (BOBS_SECRET, OTHERS_SECRET):
        cp.kubectl("create", "secret", "generic", name, "-n", ns, "--from-literal=k=v")
    for name in (BOBS_CONFIG, OTHERS_CONFIG):
        cp.kubectl("create", "configmap", name, "-n", ns, "--from-literal=k=v")

    assert can_i(cp, ALICE, "create", "hpoexperiments.kubetune.dev", "-n", ns)
    assert not can_i(cp, ALICE, "create", "pods", "-n", ns)
    assert not can_i(cp, ALICE, "get", "secrets", "-n", ns)
    assert can_i(cp, BOB, "create", "pods", "-n", ns)
    assert can_i(cp, BOB, "get", f"secrets/{BOBS_SECRET}", "-n", ns)
    assert not can_i(cp, BOB, "get", f"secrets/{OTHERS_SECRET}", "-n", ns)
    assert not can_i(cp, BOB, "get", f"configmaps/{OTHERS_CONFIG}", "-n", ns)
    yield ns


def example(name: str, mutate: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """The shipped example, renamed; `mutate` changes its pod spec in place."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    if mutate is not None:
        mutate(document["spec"]["trialTemplate"]["spec"])
    return document


def apply_as(
    cp: ControlPlane, user: str | None, ns: str, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` with the user's own client certificate (None: the admin)."""
    kubeconfig = cp.user_kubeconfig(user) if user else None
    return cp.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=yaml.safe_dump(document),
        kubeconfig=kubeconfig,
        check=False,
    )


def assert_refused(
    cp: ControlPlane, result: subprocess.CompletedProcess[str], ns: str, name: str, *words: str
) -> None:
    assert result.returncode != 0, f"{name} was accepted"
    for word in words:
        assert word in result.stderr, result.stderr
    assert cp.kubectl("get", "hpoe", name, "-n", ns, check=False).returncode != 0


def assert_accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def container(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return pod["containers"][index]


def test_the_author_must_be_allowed_to_create_pods(installed: ControlPlane, team: str) -> None:
    cp, ns = installed, team
    refused = apply_as(cp, ALICE, ns, example("alices"))
    assert_refused(
        cp,
        refused,
        ns,
        "alices",
        f"spec.trialTemplate: {ALICE} may not create pods in namespace {ns}",
    )
    # With the right to create pods, the same experiment is accepted.
    grant(cp, ns, ALICE, "alice-pods", "create", "pods")
    assert can_i(cp, ALICE, "create", "pods", "-n", ns)
    assert_accepted(apply_as(cp, ALICE, ns, example("alices")))


def test_a_distributed_trial_needs_the_right_to_create_services(
    installed: ControlPlane, team: str
) -> None:
    """Its gang gets a headless Service from the operator: the author answers for it."""
    cp, ns = installed, team
    gang = example("bobs-gang")
    gang["spec"]["workers"] = 2
    refused = apply_as(cp, BOB, ns, gang)
    assert_refused(
        cp, refused, ns, "bobs-gang", f"spec.workers: {BOB} may not create services in namespace"
    )
    assert_accepted(apply_as(cp, BOB, ns, example("bobs-single")))  # workers: 1 needs none
    grant(cp, ns, BOB, "bob-services", "create", "services")
    assert_accepted(apply_as(cp, BOB, ns, gang))


def _env_secret(pod: dict[str, Any], name: str) -> None:
    container(pod)["env"] = [
        {"name": "PLAIN", "value": "1"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}},
    ]


def _env_from_secret(pod: dict[str, Any], name: str) -> None:
    container(pod)["envFrom"] = [{"secretRef": {"name": name}}]


def _volume_secret(pod: dict[str, Any], name: str) -> None:
    pod["volumes"] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "s", "secret": {"secretName": name}},
    ]


def _projected_secret(pod: dict[str, Any], name: str) -> None:
    downward = {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}
    sources = [{"downwardAPI": downward}, {"secret": {"name": name}}]
    pod["volumes"] = [{"name": "p", "projected": {"sources": sources}}]


def _init_container_secret(pod: dict[str, Any], name: str) -> None:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}]
    pod["initContainers"] = [{"name": "init", "image": "busybox", "env": env}]


def _env_config(pod: dict[str, Any], name: str) -> None:
    container(pod)["env"] = [
        {"name": "CONFIG", "valueFrom": {"configMapKeyRef": {"name": name, "key": "k"}}}
    ]


def _env_from_config(pod: dict[str, Any], name: str) -> None:
    container(pod)["envFrom"] = [{"configMapRef": {"name": name}}]


def _volume_config(pod: dict[str, Any], name: str) -> None:
    pod["volumes"] = [{"name": "c", "configMap": {"name": name}}]


def _projected_config(pod: dict[str, Any], name: str) -> None:
    pod["volumes"] = [{"name": "p", "projected": {"sources": [{"configMap": {"name": name}}]}}]


# reference kind -> (template change, path the refusal names, kind of object)
REFERENCES: dict[str, tuple[Callable[[dict[str, Any], str], None], str, str]] = {
    "env-secret": (_env_secret, "containers[0].env[1].valueFrom.secretKeyRef.name", "Secret"),
    "env-from-secret": (_env_from_secret, "containers[0].envFrom[0].secretRef.name", "Secret"),
    "volume-secret": (_volume_secret, "volumes[1].secret.secretName", "Secret"),
    "projected-secret": (
        _projected_secret,
        "volumes[0].projected.sources[1].secret.name",
        "Secret",
    ),
    "init-secret": (
        _init_container_secret,
        "initContainers[0].env[0].valueFrom.secretKeyRef.name",
        "Secret",
    ),
    "env-config": (_env_config, "containers[0].env[0].valueFrom.configMapKeyRef.name", "ConfigMap"),
    "env-from-config": (
        _env_from_config,
        "containers[0].envFrom[0].configMapRef.name",
        "ConfigMap",
    ),
    "volume-config": (_volume_config, "volumes[0].configMap.name", "ConfigMap"),
    "projected-config": (
        _projected_config,
        "volumes[0].projected.sources[0].configMap.name",
        "ConfigMap",
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_referenced_secrets_and_config_maps_must_be_readable_by_the_author(
    installed: ControlPlane, team: str, case: str
) -> None:
    cp, ns = installed, team
    change, path, kind = REFERENCES[case]
    others, own = (OTHERS_SECRET, BOBS_SECRET) if kind == "Secret" else (OTHERS_CONFIG, BOBS_CONFIG)

    refused = apply_as(cp, BOB, ns, example("theirs", lambda pod: change(pod, others)))
    assert_refused(
        cp,
        refused,
        ns,
        "theirs",
        f'spec.trialTemplate.spec.{path}: {BOB} may not get {kind} "{others}" in namespace {ns}',
    )
    # The same reference to what bob may read is accepted.
    assert_accepted(apply_as(cp, BOB, ns, example("own", lambda pod: change(pod, own))))


def test_a_namespace_wide_right_answers_for_many_names(installed: ControlPlane, team: str) -> None:
    """Up to five names are checked one by one; more need `get` on the whole kind."""
    cp, ns = installed, team

    def many(pod: dict[str, Any]) -> None:
        container(pod)["env"] = [
            {"name": f"S{i}", "valueFrom": {"secretKeyRef": {"name": f"s-{i}", "key": "k"}}}
            for i in range(7)
        ]

    refused = apply_as(cp, BOB, ns, example("many", many))
    assert_refused(cp, refused, ns, "many", f'{BOB} may not get Secret "s-0"')
    grant(cp, ns, BOB, "bob-all-secrets", "get", "secrets")
    assert_accepted(apply_as(cp, BOB, ns, example("many", many)))


def test_kubetune_token_secrets_are_refused_to_everyone(
    installed: ControlPlane, namespace: str
) -> None:
    """Even the cluster admin: a trial token is for its trial's pod alone."""
    cp, ns = installed, namespace
    # Another experiment's token block, and trial 0's own Secret as older operators made it.
    for thief, token in (
        ("thief", token_block_secret_name("digits-mlp", 0)),
        ("old-thief", token_secret_name("digits-mlp-0")),
    ):
        refused = apply_as(cp, None, ns, example(thief, lambda pod, t=token: _env_secret(pod, t)))
        assert_refused(
            cp,
            refused,
            ns,
            thief,
            f'spec.trialTemplate.spec.containers[0].env[1].valueFrom.secretKeyRef.name ("{token}")',
            "kubetune's token Secrets",
        )
    refused = apply_as(
        cp, None, ns, example("key-thief", lambda pod: _volume_secret(pod, "kubetune-token-key"))
    )
    assert_refused(
        cp,
        refused,
        ns,
        "key-thief",
        'spec.trialTemplate.spec.volumes[1].secret.secretName ("kubetune-token-key")',
    )

    def pull(pod: dict[str, Any]) -> None:
        pod["imagePullSecrets"] = [{"name": "registry"}, {"name": token}]

    refused = apply_as(cp, None, ns, example("puller", pull))
    assert_refused(cp, refused, ns, "puller", "spec.trialTemplate.spec.imagePullSecrets[1].name")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A template change: `path` is dotted, from the pod spec; `c0` is containers[0]."""

    def mutate(pod: dict[str, Any]) -> None:
        node = pod
        parts = path.split(".")
        for part in parts[:-1]:
            node = container(pod) if part == "c0" else node.setdefault(part, {})
        node[parts[-1]] = value

    return mutate


def _restricted(pod: dict[str, Any]) -> None:
    """What the restricted level asks of the example's pod."""
    pod["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container(pod)["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(pod: dict[str, Any]) -> None:
        for change in changes:
            change(pod)

    return mutate


PRIVILEGED = "spec.trialTemplate.spec.containers[0].securityContext.privileged must not be true"
# case -> (namespace's enforced level, template change, what the refusal says)
POD_SECURITY: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "privileged": ("baseline", _set("c0.securityContext.privileged", True), PRIVILEGED),
    "host-network": (
        "baseline",
        _set("hostNetwork", True),
        "spec.trialTemplate.spec.hostNetwork must not be true",
    ),
    "host-pid": (
        "baseline",
        _set("hostPID", True),
        "spec.trialTemplate.spec.hostPID must not be true",
    ),
    "host-path": (
        "baseline",
        _set("volumes", [{"name": "root", "hostPath": {"path": "/"}}]),
        "spec.trialTemplate.spec.volumes[0].hostPath: hostPath volumes are not allowed",
    ),
    "capability": (
        "baseline",
        _set("c0.securityContext.capabilities", {"add": ["SYS_ADMIN", "CHOWN"]}),
        "containers[0].securityContext.capabilities.add: SYS_ADMIN may not be added",
    ),
    "restricted-root": (
        "restricted",
        _both(_restricted, _set("securityContext.runAsUser", 0)),
        "spec.trialTemplate.spec.securityContext.runAsUser must not be 0",
    ),
    "restricted-run-as-root": (
        "restricted",
        _both(_restricted, _set("c0.securityContext.runAsNonRoot", False)),
        "spec.trialTemplate.spec.containers[0].securityContext.runAsNonRoot must be true",
    ),
    "restricted-escalation": (
        "restricted",
        _both(_restricted, _set("c0.securityContext.allowPrivilegeEscalation", True)),
        "containers[0].securityContext.allowPrivilegeEscalation must be false",
    ),
    "restricted-host-path": (
        "restricted",
        _both(_restricted, _set("volumes", [{"name": "root", "hostPath": {"path": "/"}}])),
        "spec.trialTemplate.spec.volumes[0]: hostPath volumes are not allowed",
    ),
}


def label_level(cp: ControlPlane, ns: str, level: str) -> None:
    cp.kubectl("label", "namespace", ns, f"pod-security.kubernetes.io/enforce={level}")


def pod_of(document: dict[str, Any]) -> dict[str, Any]:
    """The pod the template describes (what the operator would create, near enough for
    Pod Security: it adds labels, env and owner references only)."""
    spec = copy.deepcopy(document["spec"]["trialTemplate"]["spec"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}


def pod_security_admits(cp: ControlPlane, ns: str, document: dict[str, Any]) -> bool:
    result = cp.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps(pod_of(document)),
        check=False,
    )
    assert result.returncode == 0 or "violates PodSecurity" in result.stderr, result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("case", sorted(POD_SECURITY))
def test_the_template_meets_the_namespace_pod_security_level(
    installed: ControlPlane, namespace: str, case: str
) -> None:
    cp, ns = installed, namespace
    level, change, words = POD_SECURITY[case]
    document = example("risky", change)

    # Where the namespace enforces nothing, it is the cluster's business, and kubetune's
    # too: accepted, as the pod itself would be.
    assert pod_security_admits(cp, ns, document)
    assert_accepted(apply_as(cp, None, ns, document))
    cp.kubectl("delete", "hpoe", "risky", "-n", ns)

    label_level(cp, ns, level)
    assert not pod_security_admits(cp, ns, document), "PodSecurity admits the pod itself"
    refused = apply_as(cp, None, ns, document)
    assert_refused(cp, refused, ns, "risky", words, f'enforces Pod Security level "{level}"')


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_a_template_that_meets_the_level_is_accepted(
    installed: ControlPlane, namespace: str, level: str
) -> None:
    cp, ns = installed, namespace
    label_level(cp, ns, level)
    document = example("fine", _restricted if level == "restricted" else None)
    assert pod_security_admits(cp, ns, document)
    assert_accepted(apply_as(cp, None, ns, document))
    if level == "restricted":  # the bare example asks for none of it
        assert not pod_security_admits(cp, ns, example("bare"))
        refused = apply_as(cp, None, ns, example("bare"))
        assert_refused(
            cp,
            refused,
            ns,
            "bare",
            "containers[0].securityContext.allowPrivilegeEscalation must be false",
            "containers[0].securityContext.runAsNonRoot must be true",
            "containers[0].securityContext.seccompProfile.type must be RuntimeDefault",
            "containers[0].securityContext.capabilities.drop must include ALL",
        )


def test_no_experiments_in_kube_system(installed: ControlPlane) -> None:
    refused = apply_as(installed, None, "kube-system", example("in-kube-system"))
    assert_refused(
        installed,
        refused,
        "kube-system",
        "in-kube-system",
        "HPOExperiments are not allowed in kube-system",
    )


def test_updates_are_checked_when_they_change_the_template(
    installed: ControlPlane, team: str
) -> None:
    """The budget (and kopf's annotations, written by the operator) may change freely;
    a changed template is checked against whoever changes it."""
    cp, ns = installed, team
    assert_accepted(apply_as(cp, BOB, ns, example("shared")))
    alice = cp.user_kubeconfig(ALICE)

    def patch(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(
            "patch",
            "hpoe",
            "shared",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps(body),
            kubeconfig=alice,
            check=False,
        )

    assert_accepted(patch({"spec": {"budget": {"maxTrials": 30}}}))
    assert_accepted(patch({"metadata": {"annotations": {"kopf.zalando.org/last": "x"}}}))
    stored = json.loads(cp.kubectl("get", "hpoe", "shared", "-n", ns, "-o", "json").stdout)
    pod = stored["spec"]["trialTemplate"]["spec"]
    _env_secret(pod, BOBS_SECRET)
    refused = patch({"spec": {"trialTemplate": {"spec": pod}}})
    assert refused.returncode != 0
    assert f"{ALICE} may not create pods in namespace {ns}" in refused.stderr, refused.stderr
    stored = json.loads(cp.kubectl("get", "hpoe", "shared", "-n", ns, "-o", "json").stdout)
    assert "env" not in stored["spec"]["trialTemplate"]["spec"]["containers"][0]


QUANTITIES: dict[str, tuple[dict[str, Any], bool]] = {
    "bogus-cpu-limit": ({"limits": {"cpu": "bogus"}}, False),
    "negative-memory-request": ({"requests": {"memory": "-1Gi"}}, False),
    "unit-typo": ({"limits": {"memory": "4GB"}}, False),
    "quantities": ({"limits": {"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": 1}}, True),
    "decimal-string": ({"requests": {"cpu": "0.5"}}, True),
}


@pytest.mark.parametrize("case", sorted(QUANTITIES))
def test_resource_quantities_are_checked_by_the_crd(
    installed: ControlPlane, namespace: str, case: str
) -> None:
    """A quantity the API server would refuse at each trial pod's creation is refused
    at `kubectl apply`, by the CRD's CEL (isQuantity)."""
    cp, ns = installed, namespace
    resources, valid = QUANTITIES[case]
    for kind in ("containers", "initContainers"):
        name = f"q-{kind.lower()}"

        def change(pod: dict[str, Any], kind: str = kind) -> None:
            if kind == "initContainers":
                pod["initContainers"] = [{"name": "init", "image": "busybox"}]
            pod[kind][0]["resources"] = resources

        result = apply_as(cp, None, ns, example(name, change))
        if valid:
            assert_accepted(result)
        else:
            section = next(iter(resources))
            assert_refused(
                cp,
                result,
                ns,
                name,
                f"spec.trialTemplate.spec.{kind}[0].resources.{section}",
                "must be a quantity of at least 0",
            )


def _owned_by_a_trial(kind: str, name: str) -> dict[str, Any]:
    owner = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "HPOTrial",
        "name": "digits-mlp-0",
        "uid": "6f1c2a9e-0000-4000-8000-000000000000",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "ownerReferences": [owner]},
    }
    if kind == "Pod":
        document["spec"] = {"containers": [{"name": "c", "image": "busybox"}]}
    elif kind == "Service":  # a gang's headless Service (spec.workers > 1)
        document["spec"] = {"clusterIP": "None", "selector": {"kubetune.dev/trial": "x"}}
    else:
        document["stringData"] = {"token": "t"}
    return document


def test_the_operator_creates_only_trial_objects_and_nothing_in_kube_system(
    installed: ControlPlane, namespace: str
) -> None:
    """Its ClusterRole may create pods and Secrets anywhere (RBAC has no exceptions);
    the second policy narrows that to what kubetune creates."""
    cp, ns = installed, namespace
    operator = cp.service_account_kubeconfig(*OPERATOR_SA)
    sa = f"system:serviceaccount:{OPERATOR_SA[0]}:{OPERATOR_SA[1]}"
    assert can_i(cp, sa, "create", "pods", "-n", "kube-system")  # RBAC alone says yes

    def create(target: str, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            target,
            "-f",
            "-",
            input=json.dumps(document),
            kubeconfig=operator,
            check=False,
        )

    for kind in ("Pod", "Secret", "Service"):
        accepted = create(ns, _owned_by_a_trial(kind, "digits-mlp-0-a0"))
        assert accepted.returncode == 0, accepted.stderr
        refused = create("kube-system", _owned_by_a_trial(kind, "digits-mlp-0-a0"))
        assert refused.returncode != 0
        assert "creates nothing in kube-system" in refused.stderr, refused.stderr
        bare = _owned_by_a_trial(kind, "not-a-trials")
        del bare["metadata"]["ownerReferences"]
        refused = create(ns, bare)
        assert refused.returncode != 0
        assert "controlled by an HPOTrial" in refused.stderr, refused.stderr
