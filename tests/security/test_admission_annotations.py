"""Pod Security through the template's pod annotations: the operator copies
`trialTemplate.metadata.annotations` to every trial pod, and the API server's
PodSecurity admission judges the AppArmor annotation
(`container.apparmor.security.beta.kubernetes.io/<container>`) as it judges
`appArmorProfile`. The policy checked only the field: an experiment asking for an
unconfined container by annotation was accepted at `kubectl apply`, and each of its
trial pods was refused later, failing the trial instead of naming the field up front.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.security.test_admission_policy import (
    apply_as,
    assert_accepted,
    assert_refused,
    example,
    installed,
    label_level,
)

pytestmark = pytest.mark.cluster
__all__ = ["installed"]  # the module fixture: manifests applied, no operator
KEY = "container.apparmor.security.beta.kubernetes.io/trial"


def with_apparmor(name: str, profile: str) -> dict[str, Any]:
    document = example(name)
    document["spec"]["trialTemplate"]["metadata"] = {"annotations": {KEY: profile, "a": "b"}}
    return document


def pod_security_admits(cp: ControlPlane, ns: str, document: dict[str, Any]) -> bool:
    """The pod as the operator makes it, as far as Pod Security looks: the template's
    annotations and spec."""
    template = copy.deepcopy(document["spec"]["trialTemplate"])
    metadata = {"name": "probe", **template.get("metadata", {})}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    result = cp.kubectl(
        "create", "--dry-run=server", "-n", ns, "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode == 0 or "violates PodSecurity" in result.stderr, result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_an_unconfined_apparmor_annotation_is_refused_at_apply(
    installed: ControlPlane, namespace: str, level: str
) -> None:
    cp, ns = installed, namespace
    label_level(cp, ns, level)
    risky = with_apparmor("risky", "unconfined")
    assert not pod_security_admits(cp, ns, risky), "PodSecurity admits the pod itself"
    assert_refused(
        cp,
        apply_as(cp, None, ns, risky),
        ns,
        "risky",
        f'spec.trialTemplate.metadata.annotations["{KEY}"]: AppArmor profile must be',
        f'enforces Pod Security level "{level}"',
    )


@pytest.mark.parametrize("profile", ["runtime/default", "localhost/trial-profile"])
def test_confined_apparmor_annotations_are_accepted(
    installed: ControlPlane, namespace: str, profile: str
) -> None:
    cp, ns = installed, namespace
    label_level(cp, ns, "baseline")
    fine = with_apparmor("fine", profile)
    assert pod_security_admits(cp, ns, fine)
    assert_accepted(apply_as(cp, None, ns, fine))
