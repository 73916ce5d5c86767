"""An experiment's Kubernetes Events within a budget per reason (operator/eventbudget.py):
a burst, then one an interval; those beyond are held and posted as one that counts
them, never lost; a rare reason is never held behind a frequent one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import kopf

from kubetune.kubeevents import MESSAGE_LIMIT, event_body
from kubetune.operator import handlers
from kubetune.operator.eventbudget import EventBudget
from kubetune.operator.experiment import Experiment, OperatorConfig
from kubetune.operator.handlers import Registry
from kubetune.spec import parse_experiment
from tests.unit.test_spec import valid


def test_a_reason_posts_its_burst_then_one_an_interval() -> None:
    budget = EventBudget(burst=3, interval=10.0)
    assert [budget.admit("TrialStarted", 0.0) for _ in range(4)] == [True] * 3 + [False]
    assert budget.admit("TrialFailed", 0.0)  # another reason has its own budget
    assert budget.due("TrialStarted", 0.0) == 10.0
    assert budget.due("TrialStarted", 4.0) == 6.0
    assert budget.admit("TrialStarted", 10.0)  # refilled by one
    assert not budget.admit("TrialStarted", 15.0)
    assert [budget.admit("TrialStarted", 100.0) for _ in range(4)] == [True] * 3 + [False]


def test_events_beyond_the_budget_are_held_and_released_as_one_that_counts_them() -> None:
    budget = EventBudget(burst=1, interval=10.0)
    assert budget.admit("TrialPaused", 0.0)
    assert not budget.admit("TrialPaused", 1.0)
    assert budget.hold("TrialPaused", "Trial e-1 paused", False, 1001.0)  # first: schedule
    assert not budget.admit("TrialPaused", 2.0)
    assert not budget.hold("TrialPaused", "Trial e-2 paused", False, 1002.0)
    # A token is back at 10 s, but the held ones go first: order is kept.
    assert not budget.admit("TrialPaused", 11.0)
    assert budget.due("TrialPaused", 11.0) == 0.0
    held = budget.release("TrialPaused", 11.0)
    assert held is not None
    assert (held.count, held.message, held.since) == (2, "Trial e-2 paused", 1001.0)
    assert budget.release("TrialPaused", 11.0) is None
    assert not budget.admit("TrialPaused", 12.0)  # the release took the token
    assert budget.admit("TrialPaused", 21.0)


def test_an_events_count_and_first_time_are_posted() -> None:
    involved = {"metadata": {"name": "exp", "namespace": "team", "uid": "u"}}
    single = event_body(involved, "HPOExperiment", "TrialStarted", "started")
    assert single.count == 1 and single.first_timestamp == single.last_timestamp
    since = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    folded = event_body(involved, "HPOExperiment", "TrialStarted", "x", False, 7, since.timestamp())
    assert folded.count == 7 and folded.first_timestamp == since
    assert folded.last_timestamp > since


class RecordingKube:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, int]] = []

    async def post_event(self, event: Any) -> None:
        self.posted.append((event.reason, event.message, event.count))


def test_an_experiment_posts_its_events_within_the_budget_and_loses_none() -> None:
    experiment, kube = recording_experiment(EventBudget(burst=5, interval=0.2))

    async def run() -> None:
        for number in range(40):
            await experiment.event(f"Trial exp-{number} started", "TrialStarted")
        await experiment.event("Trial exp-3 failed: OOMKilled", "TrialFailed", warning=True)
        await asyncio.sleep(0.1)
        assert len(kube.posted) == 6  # the burst and the failure, not held behind them
        await asyncio.sleep(0.3)
        await asyncio.gather(*experiment.background)

    asyncio.run(run())
    started = [p for p in kube.posted if p[0] == "TrialStarted"]
    assert len(started) == 6, started  # 40 Events: the burst of 5, then one write
    assert sum(count for _, _, count in started) == 40  # none lost
    assert started[-1][1].startswith("Trial exp-39 started (and 34 more")
    assert ("TrialFailed", "Trial exp-3 failed: OOMKilled", 1) in kube.posted


def recording_experiment(budget: EventBudget) -> tuple[Experiment, RecordingKube]:
    document = valid()
    spec = parse_experiment(document).spec
    body = {**document, "metadata": {"name": "exp", "namespace": "team", "uid": "u"}}
    config = OperatorConfig(endpoint_url="http://op:8080", token_key=b"k" * 32)
    kube = RecordingKube()
    experiment = Experiment(kube, config, body, spec)  # type: ignore[arg-type]
    experiment.events = budget
    return experiment, kube


def test_held_events_are_posted_at_once_when_the_operator_stops() -> None:
    # Held for an hour: before, a stop (a rolling upgrade) lost them with the process.
    experiment, kube = recording_experiment(EventBudget(burst=1, interval=3600.0))

    async def run() -> None:
        for number in range(3):
            await experiment.event(f"Trial exp-{number} started", "TrialStarted")
        await experiment.event("Trial exp-0 paused", "TrialPaused")
        await asyncio.sleep(0)
        memo = kopf.Memo()
        registry = object.__new__(Registry)
        registry.controllers = {("team", "exp"): experiment}  # type: ignore[dict-item]
        registry.resync = registry.sampler = SimpleNamespace(close=lambda: None)  # type: ignore[assignment]
        registry.logs = SimpleNamespace(close=nothing)  # type: ignore[assignment]
        experiment.writer = SimpleNamespace(write_late_reports=lambda at_exit: nothing())  # type: ignore[attr-defined]
        memo["registry"] = registry
        await handlers._cleanup(memo)
        assert not experiment.events.held

    asyncio.run(run())
    assert kube.posted == [
        ("TrialStarted", "Trial exp-0 started", 1),
        ("TrialPaused", "Trial exp-0 paused", 1),
        (
            "TrialStarted",
            "Trial exp-2 started (and 1 more TrialStarted Events folded into this one)",
            2,
        ),
    ]


async def nothing() -> None:
    return None


def test_a_folded_events_count_survives_the_message_limit() -> None:
    experiment, kube = recording_experiment(EventBudget(burst=1, interval=0.01))

    async def run() -> None:
        for number in range(3):
            await experiment.event(f"Trial exp-{number} failed: " + "x" * 2000, "TrialFailed", True)
        await asyncio.sleep(0.05)
        await asyncio.gather(*experiment.background)

    asyncio.run(run())
    (_, message, count) = kube.posted[-1]
    assert count == 2 and len(message) == MESSAGE_LIMIT
    folded = "xxx (and 1 more TrialFailed Events folded into this one)"
    assert message.endswith(folded), message[-80:]  # the cut took the message's end, not it
    involved = {"metadata": {"name": "exp", "namespace": "team", "uid": "u"}}
    assert event_body(involved, "HPOExperiment", "TrialFailed", message).message == message
