"""The operator asks the API server for kubetune's pods and HPOTrials only.

kopf's `labels=` handler filters are applied client side: without a server-side
selector every pod of the cluster would be streamed to the operator, parsed, and
remembered by kopf until deleted, so its memory and CPU would grow with other tenants'
pods. The API server's audit log (tests/cluster/controlplane.py's AUDIT_POLICY) shows
the URL of every list and watch the operator's ServiceAccount makes.
"""

from __future__ import annotations

import time
from pathlib import Path
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


def _selector(event: dict[str, Any], name: str) -> str:
    return parse_qs(urlsplit(event["requestURI"]).query).get(name, [""])[0]


def test_kopf_watches_only_kubetune_objects_and_no_read_takes_every_pod(
    control_plane: Any, installed: Path, tmp_path: Path
) -> None:
    """Only this operator's reads are looked at (the audit log holds the session's,
    an older release's operator among them in tests/upgrade)."""
    earlier = len(_reads(control_plane))
    operator = OperatorProcess(installed, tmp_path).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            reads = _reads(control_plane)[earlier:]
            kopf = [e for e in reads if e.get("userAgent", "").startswith("kopf/")]
            watched = {e["objectRef"]["resource"] for e in kopf if e["verb"] == "watch"}
            if watched >= {"pods", "hpotrials"}:
                break
            assert time.monotonic() < deadline, f"kopf's watches not seen, only {watched}"
            time.sleep(0.5)
    finally:
        operator.stop()
        print(f"--- operator log tail ---\n{operator.log_tail()}")
    unselected = [
        f"{e['verb']} {e['requestURI']}"
        for e in kopf
        if LABEL_EXPERIMENT not in _selector(e, "labelSelector")
    ]
    assert not unselected, f"kopf read every pod or HPOTrial: {unselected}"
    # The operator's own client reads pods of an experiment, a pool or a node, never all.
    unscoped = [
        f"{e['verb']} {e['requestURI']}"
        for e in reads
        if not (_selector(e, "labelSelector") or _selector(e, "fieldSelector"))
    ]
    assert not unscoped, f"reads of every pod or HPOTrial: {unscoped}"
