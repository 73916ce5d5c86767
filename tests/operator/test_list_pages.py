"""The rebuild's LIST of an experiment's HPOTrials is read a page at a time: in one
response, 1,000 trials' histories were ~70 MB of JSON that the client held whole, as
bytes, text and objects at once (the operator's peak memory at every restart of
bench/scale.py). On the real API server, with the operator's own ServiceAccount."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kopf
import pytest

from kubetune.names import LABEL_EXPERIMENT
from kubetune.operator import handlers
from kubetune.operator import kube as kube_module
from kubetune.operator.kube import TRIALS_PER_PAGE, Kube, load_client_config
from kubetune.operator.status import trial_object
from kubetune.trials import TrialRecord
from tests.operator.harness import experiment


def count_calls(api: Any, method: str) -> list[dict[str, Any]]:
    """The keyword arguments of each call of `api.method` from now on."""
    calls: list[dict[str, Any]] = []
    listing = getattr(api, method)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return listing(*args, **kwargs)

    setattr(api, method, counted)
    return calls


def test_every_trial_is_listed_across_pages_and_only_the_experiments(
    control_plane: Any, installed: Path, namespace: str, tmp_path: Path
) -> None:
    try:
        listed_in_pages(control_plane, installed, namespace, tmp_path)
    finally:
        # No operator ever signed these: one started by a later test (`--namespace-all`)
        # would find them, refuse their records and count them in its metrics.
        control_plane.kubectl(
            "delete", "hpoexperiments,hpotrials", "--all", "-n", namespace, "--wait=true"
        )


def listed_in_pages(control_plane: Any, installed: Path, namespace: str, tmp_path: Path) -> None:
    uids = {}
    for name in ("paged", "other"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(experiment(name)))
        control_plane.kubectl("apply", "-n", namespace, "-f", str(path))
        uids[name] = control_plane.kubectl(
            "get", "hpoexperiment", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
        ).stdout.strip()
    counts = {"paged": 5, "other": 2}
    for name, count in counts.items():
        for number in range(count):
            body = trial_object(
                namespace, name, uids[name], TrialRecord(number, f"{name}-{number}")
            )
            path = tmp_path / f"{name}-{number}.json"
            path.write_text(json.dumps(body))
            control_plane.kubectl("create", "-f", str(path))

    kube = Kube(load_client_config(str(installed)))
    calls = count_calls(kube.custom, "list_namespaced_custom_object")
    listed = asyncio.run(kube.list_trials(namespace, "paged", page=2))
    assert sorted(t["metadata"]["name"] for t in listed) == [f"paged-{n}" for n in range(5)]
    assert len(calls) == 3, calls  # 2 + 2 + 1
    assert all(c["limit"] == 2 for c in calls)
    assert "_continue" not in calls[0] and all(c["_continue"] for c in calls[1:])
    calls.clear()
    assert len(asyncio.run(kube.list_trials(namespace, "other"))) == 2
    assert len(calls) == 1  # the default page holds them


def test_kopf_s_own_first_listing_of_each_watch_is_paged_as_well() -> None:
    """kopf starts each watch with a LIST of what exists, by default in one response:
    a restarted operator's HPOTrial watch then held every history at once, about 100 MB
    at 500 trials of bench/scale.py (its peak RSS, next to the rebuild's own pages)."""
    settings = kopf.OperatorSettings()
    assert settings.watching.chunk_size is None  # kopf's default: everything at once
    handlers.configure(settings)
    assert settings.watching.chunk_size == TRIALS_PER_PAGE


def test_the_experiments_pods_are_listed_a_page_at_a_time_lean_and_filtered(
    control_plane: Any,
    installed: Path,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ended pods stay with their logs, so a restarted operator's listing of an
    experiment's pods grows with its attempts: at 5,000 trials of bench/scale.py one
    response of them all took its RSS from about 300 to 480 MB. Pages, what is never
    read left out, and only what the caller keeps."""
    for name, experiment_name in [(f"p-{n}", "paged") for n in range(5)] + [("q-0", "other")]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {LABEL_EXPERIMENT: experiment_name}},
            "spec": {
                "containers": [
                    {"name": "trial", "image": "x", "env": [{"name": "BIG", "value": "x" * 4000}]}
                ],
                "nodeName": "nowhere",  # bound: no scheduler needed, never started
            },
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(pod))
        control_plane.kubectl("create", "-n", namespace, "-f", str(path))
    try:
        pods_listed_in_pages(installed, namespace, monkeypatch)
    finally:  # no kubelet would ever confirm a graceful deletion of these
        control_plane.kubectl(
            "delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0"
        )


def pods_listed_in_pages(installed: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kube = Kube(load_client_config(str(installed)))
    calls = count_calls(kube.core, "list_namespaced_pod")
    monkeypatch.setattr(kube_module, "PODS_PER_PAGE", 2)
    listed = asyncio.run(kube.list_pods(namespace, "paged"))
    assert sorted(p["metadata"]["name"] for p in listed) == [f"p-{n}" for n in range(5)]
    assert len(calls) == 3 and all(c["limit"] == 2 for c in calls)  # 2 + 2 + 1
    assert all(p["spec"]["containers"] == [{"name": "trial", "resources": {}}] for p in listed)
    assert all("managedFields" not in p["metadata"] for p in listed)
    assert listed[0]["spec"]["nodeName"] == "nowhere"
    kept = asyncio.run(kube.list_pods(namespace, "paged", lambda p: p["metadata"]["name"] == "p-3"))
    assert [p["metadata"]["name"] for p in kept] == ["p-3"]
