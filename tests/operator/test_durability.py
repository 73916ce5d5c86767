"""Reports no decision reads are written late, and nothing that matters is lost.

Issue 14, item 4: a report that carries no decision, reaches no rung, is at no step the
scheduler reads and is not an attempt's first that says where it started is answered
before it is durable and written with the trial's next write or within
`KUBETUNE_REPORT_WRITE_SECONDS` (operator/writes.py). These
tests run the real operator on the real control plane with trials that journal every
answer they got, and check against the journals:

* HPOTrial status writes per report fall well below one (kube-apiserver's own counter);
* with the operator SIGKILLed at moments when late reports are pending, every report
  that got a decision or reached a rung is in the history with the decision the trial
  was given (a restarted operator decides as the killed one did), and every trial's
  value is the last value it reported;
* the SDK's `flush` at exit: a trial whose last report was pending when the operator
  was killed still ends with that report's value.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.operator.harness import (
    GPU_NODE_TAINTS,
    OperatorProcess,
    api_requests,
    apply,
    experiment,
    finished,
    get,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def default_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's own default (the harness shortens it); listed before `operator`."""
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "5")


def status_patches(control_plane: Any) -> float:
    """HPOTrial status PATCHes the API server has answered, by its own counter."""
    return api_requests(control_plane, "hpotrials", "PATCH", "status")


def journaled(document: dict[str, Any], journal: Path, *extra: str) -> dict[str, Any]:
    command = document["spec"]["trialTemplate"]["spec"]["containers"][0]["command"]
    command += [f"--journal={journal}", *extra]
    return document


def asha_from_3(max_resource: int) -> dict[str, Any]:
    """ASHA by steps with rungs at 3, 9, 27 (up to `max_resource`)."""
    return {
        "name": "asha",
        "resource": "step",
        "minResource": 3,
        "maxResource": max_resource,
        "reductionFactor": 3,
    }


def answers(journal: Path) -> dict[str, list[tuple[int, int, str, float]]]:
    """Per trial: (attempt, step, decision, loss) of every answer it got, in order."""
    found: dict[str, list[tuple[int, int, str, float]]] = {}
    for path in sorted(journal.glob("*.journal")):
        rows = []
        for line in path.read_text().splitlines():
            attempt, step, decision, loss = line.split()
            rows.append((int(attempt), int(step), decision, float(loss)))
        found[path.stem] = rows
    return found


def stored_reports(trial: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    history = trial["status"]["history"]
    return {(r["attempt"], r["step"]): r for r in history if r["type"] == "Reported"}


def test_reports_between_rungs_cost_a_fraction_of_a_write(
    control_plane: Any,
    namespace: str,
    default_delay: None,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    journal = tmp_path / "journal"
    journal.mkdir()
    document = experiment(
        "few-writes",
        max_trials=2,
        parallel=2,
        scheduler={"name": "none", "maxResource": 40},
        sleep=0.1,
    )
    before = status_patches(control_plane)
    apply(control_plane, namespace, journaled(document, journal))
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "few-writes"),
        180,
        operator.log_tail,
    )
    writes = status_patches(control_plane) - before
    assert done["phase"] == "Succeeded", done
    reported = sum(len(rows) for rows in answers(journal).values())
    assert reported == 80
    # Before late writes: at least one status write per report (82 here, or more).
    assert writes <= 0.4 * reported, (writes, reported)
    for trial in trials(control_plane, namespace):
        assert trial["status"]["step"] == 40
        assert trial["status"]["value"] == pytest.approx(
            answers(journal)[trial["metadata"]["name"]][-1][3]
        )


def test_an_operator_killed_while_reports_are_pending_loses_nothing_that_matters(
    control_plane: Any,
    namespace: str,
    default_delay: None,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    process_node_factory(gpus=3, taints=GPU_NODE_TAINTS)
    journal = tmp_path / "journal"
    journal.mkdir()
    scheduler = asha_from_3(27)
    document = experiment(
        "pending",
        max_trials=8,
        parallel=3,
        scheduler=scheduler,
        checkpoints=(tmp_path / "ckpt").as_uri(),
        sleep=0.15,
    )
    apply(control_plane, namespace, journaled(document, journal))
    for kill in range(3):
        # Mid-run, between the late writes: reports are pending now and then.
        wait_for(
            f"reports before kill {kill + 1}",
            lambda k=kill: sum(len(r) for r in answers(journal).values()) >= 12 * (k + 1),
            120,
            operator.log_tail,
        )
        operator.kill()
        time.sleep(1.0)
        operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "pending"),
        300,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    got = answers(journal)
    listed = trials(control_plane, namespace)
    assert len(listed) == 8 == len(got)
    rungs = {3, 9, 27}
    for trial in listed:
        name = trial["metadata"]["name"]
        stored = stored_reports(trial)
        for attempt, step, decision, loss in got[name]:
            if decision == "continue" and step not in rungs:
                continue  # no decision reads it: it may be thinned or lost
            record = stored.get((attempt, step))
            assert record is not None, f"{name}: the report of step {step} was lost"
            assert record["verdict"]["decision"] == decision, (name, step, record)
            assert record["metrics"]["loss"] == pytest.approx(loss)
        assert trial["status"]["value"] == pytest.approx(got[name][-1][3]), name
    # Late reports lost with a killed operator are no tampering: nothing is told missing.
    told = [
        e.get("message")
        for e in get(control_plane, namespace, "events")["items"]
        if e["reason"] == "HistoryRecordsMissing"
    ]
    assert not told, told


def ending_at_step_6(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    journal: Path,
    name: str,
    linger: float,
) -> None:
    """One trial that reports steps 1-6 and ends on its own `linger` seconds later,
    before maxResource (so its last report decides nothing), under an operator whose
    late writes are 60 s apart (the caller set the variable): none is written before
    the test acts."""
    operator.stop()
    operator.start()
    process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    journal.mkdir()
    document = experiment(
        name, max_trials=1, parallel=1, scheduler={"name": "none", "maxResource": 30}
    )
    apply(
        control_plane,
        namespace,
        journaled(document, journal, "--stop-after=6", f"--linger={linger}"),
    )
    wait_for(
        "the last report",
        lambda: any(r[1] == 6 for rows in answers(journal).values() for r in rows),
        120,
        operator.log_tail,
    )


def test_the_sdk_makes_its_last_report_durable_when_the_operator_lost_it(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "60")
    journal = tmp_path / "journal"
    ending_at_step_6(control_plane, namespace, operator, process_node_factory, journal, "last", 4)
    operator.kill()
    time.sleep(1.0)
    operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "last"),
        120,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    (trial,) = trials(control_plane, namespace)
    last = answers(journal)["last-0"][-1]
    assert last[1] == 6
    assert (1, 6) in stored_reports(trial)
    assert trial["status"]["step"] == 6
    assert trial["status"]["value"] == pytest.approx(last[3])


def test_an_operator_stopped_gracefully_writes_the_reports_it_answered(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rolling update sends SIGTERM: the reports answered but not yet written are
    written before the operator exits (read back while no operator runs)."""
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "60")
    journal = tmp_path / "journal"
    args = (control_plane, namespace, operator, process_node_factory, journal)
    ending_at_step_6(*args, "graceful", 60)
    operator.stop()
    (trial,) = trials(control_plane, namespace)
    assert trial["status"]["step"] == 6, trial["status"]
    assert (1, 6) in stored_reports(trial)


def pod_names(control_plane: Any, namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in get(control_plane, namespace, "pods")["items"]}


def ended_attempts(trial: dict[str, Any]) -> list[int]:
    return [r["attempt"] for r in trial["status"]["history"] if r["type"] == "AttemptEnded"]


def test_an_attempt_told_to_pause_whose_pod_is_gone_after_a_kill_is_not_created_again(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    tmp_path: Path,
) -> None:
    """Trial 0 is told to pause at rung 3 and the operator is SIGKILLed before the
    trial exits (it lingers 5 s); its pod is deleted meanwhile. The restarted operator
    ends the attempt as it was told (`PodWatch.reconcile`); before, a running attempt
    with no pod was launched again, and the paused attempt's pod created anew."""
    process_node_factory(gpus=1, taints=GPU_NODE_TAINTS)
    journal = tmp_path / "journal"
    journal.mkdir()
    scheduler = asha_from_3(9)
    document = experiment(
        "told",
        max_trials=2,
        parallel=1,
        scheduler=scheduler,
        checkpoints=(tmp_path / "ckpt").as_uri(),
        sleep=0.1,
    )
    apply(control_plane, namespace, journaled(document, journal, "--pause-linger=5"))
    wait_for(
        "trial 0's pause",
        lambda: any(r[2] == "pause" for r in answers(journal).get("told-0", [])),
        120,
        operator.log_tail,
    )
    operator.kill()
    control_plane.kubectl("delete", "pod", "-n", namespace, "told-0-a1", "--wait=true")
    operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "told"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    by_name = {t["metadata"]["name"]: t for t in trials(control_plane, namespace)}
    ended = ended_attempts(by_name["told-0"])
    assert ended.count(1) == 1, ended  # attempt 1 ended once, as told
    assert stored_reports(by_name["told-0"])[(1, 3)]["verdict"]["decision"] == "pause"
    assert "told-0-a1" not in pod_names(control_plane, namespace)


@pytest.fixture
def slow_late_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listed before `operator`: no late write within the test's window."""
    monkeypatch.setenv("KUBETUNE_REPORT_WRITE_SECONDS", "60")


def test_a_trial_killed_before_its_first_status_write_resumes_from_its_creation(
    control_plane: Any,
    namespace: str,
    slow_late_writes: None,
    operator: OperatorProcess,
    process_node_factory: Any,
) -> None:
    """A new trial's plan and launch are durable in its HPOTrial's creation
    (names.ANNOTATION_FIRST_RECORDS), not in a status write of their own. The operator is
    SIGKILLed while the first trials run and none has a status yet: the restarted one
    reads their launches there, keeps their pods (no attempt launched twice, no trial
    planned again) and blames no one for the missing status."""
    process_node_factory(gpus=2, taints=GPU_NODE_TAINTS)
    scheduler = {"name": "none", "maxResource": 24}
    apply(
        control_plane,
        namespace,
        experiment("first", max_trials=3, parallel=2, scheduler=scheduler, sleep=0.25),
    )

    def created_without_status() -> bool:
        listed = trials(control_plane, namespace)
        running = {"first-0-a1", "first-1-a1"} <= pod_names(control_plane, namespace)
        return running and len(listed) == 2 and not any(t.get("status") for t in listed)

    wait_for("two trials created, no status written", created_without_status, 60, operator.log_tail)
    launched = {}
    for trial in trials(control_plane, namespace):
        records = json.loads(trial["metadata"]["annotations"]["kubetune.dev/first-records"])
        (launch,) = [r for r in records if r["type"] == "TrialLaunched"]
        launched[trial["metadata"]["name"]] = launch
    operator.kill()
    operator.start()
    done = wait_for(
        "the experiment to finish",
        lambda: finished(control_plane, namespace, "first"),
        180,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded" and done["trialsTotal"] == 3, done
    for trial in trials(control_plane, namespace):
        history = trial["status"]["history"]
        launches = [r for r in history if r["type"] == "TrialLaunched"]
        assert [r["attempt"] for r in launches] == [1], (trial["metadata"]["name"], launches)
        name = trial["metadata"]["name"]
        if name in launched:  # the launch decided before the kill, not one made again
            assert (launches[0]["seq"], launches[0]["at"]) == (
                launched[name]["seq"],
                launched[name]["at"],
            ), (launches[0], launched[name])
        assert trial["status"]["phase"] == "Completed", trial["status"]
    assert pod_names(control_plane, namespace) == {"first-0-a1", "first-1-a1", "first-2-a1"}
    reasons = {e["reason"] for e in get(control_plane, namespace, "events")["items"]}
    assert not reasons & {"TrialReplanned", "StatusRestored", "HistoryRecordRefused"}, reasons
