"""The operator asks the API server for kubetune's pods and HPOTrials only.

kopf's `labels=` handler filters are applied client side: without a server-side
selector every pod of the cluster would be streamed to the operator, parsed, and
remembered by kopf until deleted, so its memory and CPU would grow with other tenants'
pods. The API server's audit log (tests/cluster/controlplane.py's AUDIT_POLICY) shows
the URL of every list and watch the operator's ServiceAccount makes.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kubetune.names import LABEL_EXPERIMENT
from tests.operator.harness import OperatorProcess

pytestmark = pytest.mark.cluster

OPERATOR_USER = "system:serviceaccount:kubetune-system:kubetune-operator"


def _reads(control_plane: Any) -> list[dict[str, Any]]:
    return [
        event
        for event in control_plane.audited(OPERATOR_USER)
        if event.get("verb") in ("list", "watch")
        and event.get("objectRef", {}).get("resource") in ("pods", "hpotrials")
    ]


def test_every_list_and_watch_of_pods_and_trials_selects_kubetune_objects(
    control_plane: Any, operator: OperatorProcess
) -> None:
    deadline = time.monotonic() + 60
    while True:
        reads = _reads(control_plane)
        watched = {e["objectRef"]["resource"] for e in reads if e["verb"] == "watch"}
        if watched >= {"pods", "hpotrials"}:
            break
        assert time.monotonic() < deadline, f"the operator's watches not seen, only {watched}"
        time.sleep(0.5)
    unselected = [
        f"{e['verb']} {e['requestURI']}"
        for e in reads
        if LABEL_EXPERIMENT
        not in parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector", [""])[0]
    ]
    assert not unselected, f"reads of every pod or HPOTrial: {unselected}"
