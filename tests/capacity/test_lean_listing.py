"""The capacity loop's listings (`Scaler.list_objects`): a page at a time, and each Node
and Pod without what the loop never reads (`leanobjects.lean`), with every answer the
loop reads of them unchanged. A tick lists every trial pod, ended ones too: at 1,000
trials that listing, held whole, was the operator's peak memory (bench/scale.py)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from kubetune.capacity.gangs import attempt_key
from kubetune.capacity.kubeobjects import (
    daemon,
    experiment_of,
    terminal,
    usage_times,
    waits_for_node,
)
from kubetune.capacity.pools import pod_gpus
from kubetune.capacity.scaler import OBJECTS_PER_PAGE, PoolScaler
from kubetune.leanobjects import lean
from kubetune.operator.pods import trial_pod
from kubetune.spec import parse_experiment
from tests.operator.test_pure import context
from tests.unit.test_spec import valid


def trial_pods(count: int) -> list[dict[str, Any]]:
    spec = parse_experiment(valid()).spec
    pods = []
    for number in range(count):
        pod = trial_pod(spec, "team", context(trial=f"digits-mlp-{number}"), f"uid-{number}")
        pod["metadata"]["uid"] = f"pod-{number}"
        pod["metadata"]["managedFields"] = [{"manager": "kubetune", "fieldsV1": {"f:spec": {}}}]
        pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
        pod["spec"]["nodeName"] = f"node-{number % 3}" if number % 4 else None
        started = {"startedAt": "2026-12-03T10:00:00Z"}
        state = (
            {"terminated": {**started, "finishedAt": "2026-12-03T10:05:00Z"}}
            if number % 2
            else {"running": started}
        )
        pod["status"] = {
            "phase": "Succeeded" if number % 2 else "Running",
            "startTime": "2026-12-03T09:59:50Z",
            "containerStatuses": [{"name": "trial", "state": state}],
        }
        pods.append(pod)
    return pods


def answers(pod: dict[str, Any]) -> tuple[Any, ...]:
    """Everything the capacity loop reads of a pod."""
    return (
        attempt_key(pod),
        experiment_of(pod),
        usage_times(pod, 1.0e9),
        pod_gpus(pod),
        terminal(pod),
        waits_for_node(pod),
        daemon(pod),
        pod["metadata"]["uid"],
        (pod.get("spec") or {}).get("nodeName"),
    )


class PagedList:
    """A LIST call answering `limit` items a page, as the API server does."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        start = int(kwargs.get("_continue") or 0)
        end = start + kwargs["limit"]
        page: dict[str, Any] = {"items": self.items[start:end], "metadata": {}}
        if end < len(self.items):
            page["metadata"]["continue"] = str(end)
        return type("Raw", (), {"data": json.dumps(page).encode()})()


def test_a_listing_is_read_a_page_at_a_time_and_keeps_every_answer_the_loop_reads() -> None:
    pods = trial_pods(2 * OBJECTS_PER_PAGE + 7)
    listing = PagedList(copy.deepcopy(pods))
    scaler = PoolScaler.__new__(PoolScaler)  # list_objects reads nothing of it
    listed = asyncio.run(scaler.list_objects(listing, label_selector="kubetune.dev/experiment"))
    assert len(listing.calls) == 3
    assert all(c["limit"] == OBJECTS_PER_PAGE and c["label_selector"] for c in listing.calls)
    assert [answers(p) for p in listed] == [answers(p) for p in pods]
    assert pods[1]["spec"]["containers"][0]["env"]  # what a trial pod carries ...
    assert len(json.dumps(listed)) < len(json.dumps(pods)) / 2  # ... and a tick needs not
    for pod in listed:
        assert "managedFields" not in pod["metadata"] and "volumes" not in pod["spec"]
        assert set(pod["spec"]["containers"][0]) == {"name", "resources"}


def test_a_node_keeps_what_the_loop_reads_and_loses_its_image_list() -> None:
    node = {
        "metadata": {"name": "n1", "labels": {"kubetune.dev/node-pool": "p"}, "annotations": {}},
        "spec": {"providerID": "aws:///us-east-1a/i-0abc", "taints": [{"key": "k"}]},
        "status": {
            "allocatable": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
            "images": [{"names": ["registry/big:1"], "sizeBytes": 1} for _ in range(50)],
        },
    }
    slim = lean(copy.deepcopy(node))
    assert "images" not in slim["status"]
    assert {**slim, "status": {**slim["status"], "images": node["status"]["images"]}} == node
