"""A late write waits for the write-ahead that carries it when the trial's attempt is
about to reach it (operator/latedue.py, operator/writes.py): one HPOTrial write fewer an
attempt whose late reports fall due a few steps before its rung, and a trial that stalls
is still written, once, within twice the delay."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from kubetune.operator import writes
from kubetune.operator.latedue import postponement, seconds_to_write_ahead
from kubetune.trials import Attempt, TrialPhase
from tests.operator.test_write_economy import FakeTrials, make_writer, report


def attempt(target: int | None, last_step: int | None, seconds_ago: float) -> Attempt:
    return Attempt(
        1, True, target, first_step=11, last_step=last_step, trained_from=10,
        started_at=time.time() - seconds_ago,
    )  # fmt: skip


def running(a: Attempt, phase: TrialPhase = TrialPhase.RUNNING) -> SimpleNamespace:
    return SimpleNamespace(phase=phase, attempt=a)


def test_the_write_ahead_is_forecast_at_the_attempts_own_pace() -> None:
    now = time.time()
    # Resumed at step 10, at step 26 after 16 s: a step a second, 4 steps to its rung.
    assert seconds_to_write_ahead(attempt(30, 26, 16), None, now) == pytest.approx(4, 0.01)
    # No target (median stopping): the experiment's last step is the one written ahead.
    assert seconds_to_write_ahead(attempt(None, 26, 16), 28, now) == pytest.approx(2, 0.01)
    assert seconds_to_write_ahead(attempt(None, 26, 16), None, now) is None
    assert seconds_to_write_ahead(attempt(30, None, 16), None, now) is None  # no report yet
    assert seconds_to_write_ahead(attempt(30, 10, 16), None, now) is None  # no step trained
    assert seconds_to_write_ahead(attempt(30, 31, 16), None, now) == 0  # past it: due now


def test_a_late_write_waits_only_for_a_write_ahead_within_the_delay() -> None:
    now = time.time()
    near = postponement(running(attempt(30, 26, 16)), None, now, 15)
    assert near == pytest.approx(4 * 1.25 + 1, 0.01)
    assert postponement(running(attempt(30, 26, 16)), None, now, 4.5) == 4.5  # never longer
    assert postponement(running(attempt(90, 26, 16)), None, now, 15) is None  # 64 s away
    assert postponement(running(attempt(30, 26, 16), TrialPhase.PAUSED), None, now, 15) is None
    ended = attempt(30, 26, 16)
    ended.ended_at = now
    assert postponement(running(ended), None, now, 15) is None
    assert postponement(SimpleNamespace(phase=TrialPhase.RUNNING, attempt=None), 9, now, 15) is None


def near_rung_writer(api: FakeTrials) -> tuple[writes.StatusWriter, SimpleNamespace]:
    """Trial 0 resumed at step 10, at step 19 after 0.9 s: its rung, step 20, a step away."""
    writer, engine = make_writer(api)
    engine.trials[0].attempt = attempt(20, 19, 0.9)
    return writer, engine


@pytest.mark.parametrize("rung_comes", [True, False])
def test_late_reports_due_just_before_a_rung_wait_for_its_write_or_twice_the_delay(
    monkeypatch: pytest.MonkeyPatch, rung_comes: bool
) -> None:
    """Before, the late write went out at its delay and the rung's write-ahead a moment
    later: two writes where one carries both. A trial that stalls instead is written
    once, at the postponed time (1.0 s here)."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.5)
    api = FakeTrials()
    writer, engine = near_rung_writer(api)

    async def scenario() -> None:
        await writer.flush_trial(0)
        api.patches.clear()
        engine.history.append(report(19))
        writer.note_late_report()
        await asyncio.sleep(0.7)  # its delay has passed
        assert api.patches == [] and 0 in writer.postponed
        if rung_comes:
            engine.history.append(report(20))
            writer.note_new_events()  # the rung: written ahead, carrying step 19
            await writer.flush_trial(0)
        await asyncio.sleep(1.0)

    asyncio.run(scenario())
    assert [len(patch["history"]) for _, patch in api.patches] == [3 if rung_comes else 2]
    assert writer.durable(0) and not writer.late_due and not writer.postponed


def test_a_late_write_the_api_refused_is_tried_again_without_waiting_for_the_rung(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From a review: the retry of a failed late write was postponed again, and the
    report of a trial that stalled a step before its rung waited four times the delay."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.5)
    monkeypatch.setattr(writes, "REPORT_RETRY_SECONDS", 0.5)
    api = FakeTrials()
    writer, engine = near_rung_writer(api)
    written = FakeTrials.patch_trial_status
    times: list[float] = []

    async def refused_once(self: FakeTrials, namespace: str, name: str, patch: dict) -> str:
        times.append(time.monotonic())
        if len(times) == 2:  # the first late write (the first call is the setup's)
            raise ApiException(status=500, reason="Internal Server Error")
        return await written(self, namespace, name, patch)

    monkeypatch.setattr(FakeTrials, "patch_trial_status", refused_once)

    async def scenario() -> float:
        await writer.flush_trial(0)
        api.patches.clear()
        engine.history.append(report(19))
        start = time.monotonic()
        writer.note_late_report()
        await asyncio.sleep(2.5)
        return start

    start = asyncio.run(scenario())
    # Due at 0.5 s, waited for the rung until 1.0 s, refused, written at 1.5 s (2.0 before).
    refused, retried = (t - start for t in times[1:])
    assert refused >= 0.95 and retried - refused < 0.75, (refused, retried)
    assert [len(patch["history"]) for _, patch in api.patches] == [2]
    assert writer.durable(0) and not writer.late_due and not writer.postponed
