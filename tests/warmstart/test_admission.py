"""spec.warmStart gives no more rights than without kubetune: the operator reads the
earlier experiments with its own rights and stores their trials' parameters and values
in the new experiment's status, so its author must be allowed to read them themselves
(manifests/admission.yaml, kubetune-warm-start-reader). Real users (client
certificates) with Roles made by kubectl, on the test control plane."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.security.test_admission_policy import (
    apply_as,
    assert_accepted,
    assert_refused,
    can_i,
    example,
    grant,
    installed,
)

__all__ = ["installed"]

pytestmark = pytest.mark.cluster

ERIN = "erin"  # may write every HPOExperiment and create pods; HPOTrials: nothing
FRANK = "frank"  # may list HPOTrials, but get only his own HPOExperiment


def warm(name: str, parents: list[str]) -> dict[str, Any]:
    document = example(name)
    document["spec"]["warmStart"] = {"experiments": parents, "mode": "transfer"}
    return document


def test_the_author_must_be_allowed_to_read_the_earlier_experiments(
    installed: ControlPlane, namespace: str
) -> None:
    cp, ns = installed, namespace
    verbs = "get,list,create,update,patch"
    grant(cp, ns, ERIN, "erin-experiments", verbs, "hpoexperiments.kubetune.dev")
    grant(cp, ns, ERIN, "erin-pods", "create", "pods")
    assert not can_i(cp, ERIN, "list", "hpotrials.kubetune.dev", "-n", ns)
    # The parent need not exist: what would be read is refused before it is.
    assert_refused(
        cp,
        apply_as(cp, ERIN, ns, warm("erins", ["payroll-model"])),
        ns,
        "erins",
        f"spec.warmStart: {ERIN} may not list HPOTrials in namespace {ns}",
    )
    # Without warmStart nothing changes for her.
    assert_accepted(apply_as(cp, ERIN, ns, example("erins-cold")))
    grant(cp, ns, ERIN, "erin-trials", "get,list", "hpotrials.kubetune.dev")
    assert_accepted(apply_as(cp, ERIN, ns, warm("erins", ["payroll-model"])))

    # Frank may read HPOTrials but get only his own experiment (by name): the second
    # earlier experiment named is not his to read.
    grant(cp, ns, FRANK, "frank-create", "create", "hpoexperiments.kubetune.dev")
    grant(cp, ns, FRANK, "frank-own", "get,update,patch", "hpoexperiments.kubetune.dev", "franks")
    grant(cp, ns, FRANK, "frank-older", "get", "hpoexperiments.kubetune.dev", "franks-v1")
    grant(cp, ns, FRANK, "frank-pods", "create", "pods")
    grant(cp, ns, FRANK, "frank-trials", "list", "hpotrials.kubetune.dev")
    assert not can_i(cp, FRANK, "get", "hpoexperiments.kubetune.dev/payroll-model", "-n", ns)
    assert_refused(
        cp,
        apply_as(cp, FRANK, ns, warm("franks", ["franks-v1", "payroll-model"])),
        ns,
        "franks",
        f'spec.warmStart.experiments[1]: {FRANK} may not get HPOExperiment "payroll-model" '
        f"in namespace {ns}",
    )
    assert_accepted(apply_as(cp, FRANK, ns, warm("franks", ["franks-v1"])))
