"""The capacity loop's listings (`Scaler.list_objects`): a page at a time, and each Node
and Pod without what the loop never reads (`leanobjects.lean`; an ended trial pod cut
to its skeleton, `kubeobjects.ended_pod`), with every answer the loop reads of them
unchanged. A tick lists every trial pod, ended ones too: at 1,000 trials that listing,
held whole, was the operator's peak memory (bench/scale.py)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from kubetune.capacity.gangs import attempt_key
from kubetune.capacity.kubeobjects import (
    daemon,
    ended_pod,
    experiment_of,
    terminal,
    usage_times,
    waits_for_node,
)
from kubetune.capacity.pools import LABEL_POOL, pod_gpus
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
        pod["metadata"]["labels"][LABEL_POOL] = "gpu"
        pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
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
        # manager.tick's owners of the pool's pods (demand.pool_ceilings)
        (pod["metadata"].get("labels") or {}).get(LABEL_POOL, ""),
        pod["metadata"].get("namespace", ""),
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
    ended = [number for number, pod in enumerate(pods) if terminal(pod)]
    size = [len(json.dumps([listing[n] for n in ended])) for listing in (listed, pods)]
    assert size[0] < size[1] / 3  # an ended pod: its skeleton
    for pod in listed:
        assert "managedFields" not in pod["metadata"] and "volumes" not in pod["spec"]
        if terminal(pod):
            assert set(pod["metadata"]) == {"name", "namespace", "uid", "labels"}
            assert set(pod["status"]) <= {"phase", "containerStatuses"}
        else:
            assert set(pod["spec"]["containers"][0]) == {"name", "resources"}
    assert any(terminal(p) for p in listed) and not all(terminal(p) for p in listed)


def ended_pods() -> list[dict[str, Any]]:
    """Ended pods as the cluster may show them: failed before any container ran, a
    container still waiting beside one that ran, GPUs asked in two containers (limits
    or requests, one not a number), a DaemonSet's pod, a pod with no pool label."""
    base = trial_pods(2)[1]
    assert terminal(base)
    variants = [copy.deepcopy(base) for _ in range(9)]
    never_ran, waiting_first, two_containers, of_a_daemon, no_pool, running_state = variants[:6]
    both_ran, never_bound, no_namespace = variants[6:]
    never_ran["status"] = {"phase": "Failed", "reason": "Evicted"}
    waiting_first["status"]["containerStatuses"] = [
        {"name": "init-like", "state": {"waiting": {"reason": "PodInitializing"}}},
        {"name": "trial", "state": {"terminated": {"startedAt": "2026-12-03T11:00:00Z"}}},
    ]
    two_containers["spec"]["containers"] = [
        {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
        {"name": "b", "resources": {"requests": {"nvidia.com/gpu": 1, "cpu": "1"}}},
        {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "x"}}},
    ]
    of_a_daemon["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "d"}]
    del no_pool["metadata"]["labels"][LABEL_POOL]
    running_state["status"]["containerStatuses"][0]["state"] = {
        "running": {"startedAt": "2026-12-03T12:00:00Z"}
    }
    both_ran["status"]["containerStatuses"] = [
        {"name": "trial", "state": {"terminated": {"startedAt": "2026-12-03T10:01:00Z"}}},
        {"name": "sidecar", "state": {"terminated": {"startedAt": "2026-12-03T10:00:00Z"}}},
    ]
    never_bound["spec"].pop("nodeName", None)
    never_bound["metadata"]["deletionTimestamp"] = "2026-12-03T10:06:00Z"
    del no_namespace["metadata"]["namespace"]
    return variants


def test_an_ended_pod_keeps_every_answer_the_loop_reads_and_nothing_else() -> None:
    for pod in ended_pods():
        original = copy.deepcopy(pod)
        skeleton = ended_pod(pod)
        assert answers(skeleton) == answers(original)
        assert pod == original  # the listed object is read, not changed
        if daemon(original):
            assert skeleton is pod  # pods_on reads it: kept whole
        else:
            assert set(skeleton["metadata"]) <= {"name", "namespace", "uid", "labels"}
            assert set(skeleton["metadata"]["labels"]) <= set(original["metadata"]["labels"])
    running = trial_pods(1)[0]
    assert not terminal(running) and ended_pod(running) is running


def test_an_ended_pod_the_cut_cannot_read_is_listed_as_before() -> None:
    """A malformed object (the API server's schema makes one unlikely) fails neither the
    listing nor every tick: it is kept whole (`lean`) and read as it was before."""
    pods = trial_pods(4)
    broken = pods[1]
    broken["metadata"]["ownerReferences"] = [None]
    broken["status"]["containerStatuses"] = [None]
    scaler = PoolScaler.__new__(PoolScaler)
    listed = asyncio.run(scaler.list_objects(PagedList(copy.deepcopy(pods))))
    assert listed[1] == lean(copy.deepcopy(broken))
    assert set(listed[3]["metadata"]) == {"name", "namespace", "uid", "labels"}  # cut


def test_ended_pods_share_the_strings_many_of_them_carry() -> None:
    first, second = (ended_pod(json.loads(json.dumps(p))) for p in trial_pods(4)[1::2])
    for pick in (
        lambda p: p["metadata"]["namespace"],
        lambda p: p["metadata"]["labels"][LABEL_POOL],
        lambda p: p["status"]["phase"],
        lambda p: p["spec"]["containers"],
    ):
        assert pick(first) is pick(second)


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
