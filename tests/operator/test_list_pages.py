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

from kubetune.operator import handlers
from kubetune.operator.kube import TRIALS_PER_PAGE, Kube, load_client_config
from kubetune.operator.status import trial_object
from kubetune.trials import TrialRecord
from tests.operator.harness import experiment


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
    calls: list[dict[str, Any]] = []
    listing = kube.custom.list_namespaced_custom_object

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return listing(*args, **kwargs)

    kube.custom.list_namespaced_custom_object = counted  # type: ignore[method-assign]
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
