"""Late report writes (operator/writes.py) against a careless admin and a failing API:
bad KUBETUNE_*_SECONDS values stop the operator at start with one line, and a late
write that failed is tried again with no further report to start it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.operator import writes
from kubetune.operator.writes import StatusWriter
from kubetune.schedulers.base import is_milestone
from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    apply,
    experiment,
    trials,
    wait_for,
)
from tests.operator.test_durability import answers, journaled, stored_reports

BAD = [
    ("KUBETUNE_REPORT_WRITE_SECONDS", "abc", ">= 0"),
    ("KUBETUNE_REPORT_WRITE_SECONDS", "-1", ">= 0"),
    ("KUBETUNE_REPORT_WRITE_SECONDS", "nan", ">= 0"),
    ("KUBETUNE_REPORT_WRITE_SECONDS", "inf", ">= 0"),  # before: late reports never written
    ("KUBETUNE_PARTIAL_GANG_SECONDS", "0", "> 0"),  # before: every gang released at once
    ("KUBETUNE_PARTIAL_GANG_SECONDS", "5m", "> 0"),
    ("KUBETUNE_EVENT_INTERVAL_SECONDS", "0", "> 0 and <= 300"),  # no budget at all
    ("KUBETUNE_EVENT_INTERVAL_SECONDS", "1e300", "> 0 and <= 300"),  # held for good
]


@pytest.mark.parametrize(("name", "value", "bound"), BAD)
def test_a_bad_seconds_setting_stops_the_operator_at_start_with_one_line(
    name: str, value: str, bound: str, tmp_path: Any
) -> None:
    env = {"PATH": "/usr/bin:/bin", name: value}
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kubetune.cli import main; sys.exit(main())",
            "operator",
            "--endpoint-url=http://127.0.0.1:1",
            f"--kubeconfig={tmp_path / 'none'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 2, found.stderr
    assert found.stderr.strip() == (
        f"{name}: expected a finite number of seconds {bound}, got {value!r}"
    ), found.stderr


def test_zero_report_write_seconds_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetune.operator.settings import env_seconds

    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "0")
    assert env_seconds("KUBETUNE_REPORT_WRITE_SECONDS", 5.0) == 0.0
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", " ")
    assert env_seconds("KUBETUNE_REPORT_WRITE_SECONDS", 5.0) == 5.0


def late_writer(outcomes: list[Exception | None]) -> tuple[StatusWriter, list[int]]:
    """A StatusWriter whose late writes fail or succeed in turn (None: written)."""
    writer = StatusWriter.__new__(StatusWriter)  # only the late-write path is exercised
    writer.experiment = SimpleNamespace(  # type: ignore[assignment]
        name="exp", closed=False, engine=SimpleNamespace(trials=[])
    )
    writer.history = SimpleNamespace(note_new_events=lambda: {3})  # type: ignore[assignment]
    writer.late_reports = set()
    writer.late_nodes = set()
    writer.late_due = {}
    writer.postponed = set()
    writer.report_flush = None
    calls: list[int] = []

    async def write_late_reports(numbers: list[int] | None = None) -> None:
        calls.append(len(calls))
        outcome = outcomes[min(len(calls) - 1, len(outcomes) - 1)]
        if outcome is not None:
            raise outcome
        writer.late_reports.clear()

    writer.write_late_reports = write_late_reports  # type: ignore[method-assign]
    return writer, calls


def test_a_late_write_that_failed_is_tried_again_without_another_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API answers 500 to the late write of a trial that then reports nothing more
    (it hangs, say): before, the report stayed unwritten until some other write."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.01)
    monkeypatch.setattr(writes, "REPORT_RETRY_SECONDS", 0.02, raising=False)
    writer, calls = late_writer([ApiException(status=500, reason="Internal Server Error"), None])

    async def scenario() -> None:
        writer.note_late_report()
        assert writer.report_flush is not None
        await asyncio.wait_for(writer.report_flush, 5)

    asyncio.run(scenario())
    assert len(calls) == 2 and not writer.late_reports


def test_late_write_retries_end_when_the_experiment_is_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API that keeps failing: retried, and no more once the experiment is gone."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.01)
    monkeypatch.setattr(writes, "REPORT_RETRY_SECONDS", 0.02, raising=False)
    writer, calls = late_writer([ApiException(status=409, reason="Conflict")])

    async def scenario() -> None:
        writer.note_late_report()
        for _ in range(500):  # at most 5 s
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        assert len(calls) >= 3, calls
        writer.experiment.closed = True
        assert writer.report_flush is not None
        await asyncio.wait_for(writer.report_flush, 5)

    asyncio.run(scenario())
    assert 3 <= len(calls) <= 4


@pytest.mark.cluster
@pytest.mark.slow
def test_median_stopping_milestone_reports_are_durable_when_answered(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Median stopping decides from values at milestones (every step below 100, then
    100, 110, ...): with late writes 60 s apart, the operator SIGKILLed after the trial's
    last report (step 105) was answered, every answered milestone report is already in
    the HPOTrial, and the answered non-milestone ones (101-105) are not (the late path
    was taken)."""
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "60")
    operator.stop()
    operator.start()
    process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    journal = tmp_path / "journal"
    journal.mkdir()
    scheduler = {"name": "median", "resource": "step", "maxResource": 200, "minTrials": 1}
    document = experiment("med", max_trials=1, parallel=1, scheduler=scheduler, sleep=0.01)
    # It reports steps 1-105 and lingers: its last reports (101-105) decide nothing, and
    # no later milestone's write carries them.
    apply(control_plane, namespace, journaled(document, journal, "--stop-after=105", "--linger=30"))

    def answered() -> list[tuple[int, int, str, float]]:
        return answers(journal).get("med-0", [])

    wait_for(
        "step 105 answered", lambda: any(r[1] >= 105 for r in answered()), 120, operator.log_tail
    )
    operator.kill()
    (trial,) = trials(control_plane, namespace)
    stored = stored_reports(trial)
    steps = [r[1] for r in answered() if r[0] == 1]
    lost = [s for s in steps if is_milestone(s) and (1, s) not in stored]
    assert not lost, f"milestone reports answered but not stored: {lost}"
    assert [s for s in steps if (1, s) not in stored] == [101, 102, 103, 104, 105], steps
