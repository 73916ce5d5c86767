"""Writes the operator does not make (operator/writes.py), against a fake API: a flush
that would send the status last written sends nothing, and a trial's node goes with its
next write instead of a write of its own. The scale bench counted both: with them and
reports past a reached rung written late (engine.report), an open-loop attempt of about
17 reports went from about 14 HPOTrial status writes to about 6 (bench/scale.py)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from kubetune.events import Reported, TrialLaunched
from kubetune.observability import Observer
from kubetune.operator import loading, podwatch, store, writes
from kubetune.operator.authorship import Authorship
from kubetune.operator.history import HistoryRecords, late_report, start_report
from kubetune.operator.packed import PackedRecords
from kubetune.operator.writes import StatusWriter
from kubetune.trials import (
    Attempt,
    Decision,
    TrialPhase,
    Verdict,
    start_read_from,
    trained_from,
)
from tests.engine.helpers import Driver, make_spec


class FakeTrials:
    """The HPOTrial status subresource: every patch kept, in order."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        self.patches.append((name, patch))
        return str(len(self.patches))


def fake_experiment(engine: Any, kube: Any) -> Any:
    """What StatusWriter and HistoryRecords read of an operator/experiment.Experiment."""
    return SimpleNamespace(
        body={},
        closed=False,
        engine=engine,
        signer=store.HistorySigner(b"k" * 32, "ns/e/uid"),
        spec=SimpleNamespace(objective=SimpleNamespace(metric="loss")),
        namespace="ns",
        name="e",
        kube=kube,
    )


def fake_trial(number: int) -> Any:
    """A running trial as StatusWriter reads it (no attempt: nothing to forecast)."""
    return SimpleNamespace(
        number=number, name=f"t{number}", phase=TrialPhase.RUNNING, reason="", attempt=None
    )


def fake_engine(trials: int) -> Any:
    """What StatusWriter reads of an engine: `trials` running trials, t0 on."""
    return SimpleNamespace(
        history=[],
        trials=[fake_trial(n) for n in range(trials)],
        scheduler=SimpleNamespace(must_keep=lambda step: False, max_resource=None),
    )


def make_writer(api: FakeTrials) -> tuple[StatusWriter, Any]:
    engine = fake_engine(1)
    experiment = fake_experiment(engine, api)
    writer = StatusWriter(experiment, HistoryRecords(experiment))  # type: ignore[arg-type]
    writer.trial_uids = {0: "u0"}

    def status(trial: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"history": records, "node": writer.nodes.get(trial.number)}

    writer.trial_status = status  # type: ignore[method-assign]
    engine.history.append(TrialLaunched(0, 1, False, 27, 0.0))
    writer.note_new_events()
    return writer, engine


def report(step: int) -> Reported:
    return Reported(0, 1, step, {"loss": 1.0}, Verdict(Decision.CONTINUE), None, 0.0)


def test_a_flush_with_nothing_new_sends_nothing() -> None:
    api = FakeTrials()
    writer, engine = make_writer(api)

    async def scenario() -> None:
        await writer.flush_trial(0)
        await asyncio.gather(writer.flush_trial(0), writer.flush_trial(0))
        engine.history.append(report(1))
        writer.note_new_events()
        await writer.flush_trial(0)
        await writer.flush_trial(0)

    asyncio.run(scenario())
    assert [len(patch["history"]) for _, patch in api.patches] == [1, 2]
    assert writer.durable(0)
    assert writer.writers == {}  # an idle trial's writer is let go, not kept for its life


def test_a_status_someone_else_wrote_is_written_again_even_if_ours_did_not_change() -> None:
    api = FakeTrials()
    writer, _ = make_writer(api)

    async def scenario() -> None:
        await writer.flush_trial(0)
        writer.ours.foreign_trial_status[0] = {"phase": "Forged"}
        await writer.flush_trial(0)

    asyncio.run(scenario())
    assert len(api.patches) == 2
    assert api.patches[1][1]["phase"] is None  # the forger's key cleared
    assert 0 not in writer.ours.foreign_trial_status


def test_a_trials_node_goes_with_its_next_write_or_within_the_late_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.05)
    api = FakeTrials()
    writer, engine = make_writer(api)

    async def scenario() -> None:
        await writer.flush_trial(0)
        writer.note_node(0, "node-a")
        assert len(api.patches) == 1  # no write of its own
        engine.history.append(report(1))  # the attempt's first report: written ahead
        writer.note_new_events()
        await writer.flush_trial(0)
        await asyncio.sleep(0.2)  # the late writer finds nothing left to send
        writer.note_node(0, "node-b")  # no report follows: written late, once
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert [(len(p["history"]), p["node"]) for _, p in api.patches] == [
        (1, None),
        (2, "node-a"),
        (2, "node-b"),
    ]


def test_a_durable_history_is_held_packed_and_grows_again_whole() -> None:
    """Memory: a paused or ended trial's records, once written, are held compressed
    (operator/packed.py); a new record unpacks them, a running trial's stay a list, and
    each write sends every record, in order, equal to what was written before."""
    api = FakeTrials()
    writer, engine = make_writer(api)
    trial = engine.trials[0]
    steps = range(1, 41)

    async def scenario() -> None:
        for step in steps:
            engine.history.append(report(step))
        writer.note_new_events()
        trial.phase = TrialPhase.PAUSED
        await writer.flush_trial(0)
        assert isinstance(writer.history.trials[0], PackedRecords)
        assert list(writer.history.trials[0]) == api.patches[-1][1]["history"]
        trial.phase = TrialPhase.RUNNING  # promoted
        engine.history.append(report(41))
        writer.note_new_events()
        assert isinstance(writer.history.trials[0], list)
        await writer.flush_trial(0)
        assert isinstance(writer.history.trials[0], list)
        trial.phase = TrialPhase.COMPLETED
        await writer.flush_trial(0)  # nothing new to send: only settled

    asyncio.run(scenario())
    first, second = (patch["history"] for _, patch in api.patches)
    assert second[:-1] == first
    assert [r.get("step") for r in second] == [None, *steps, 41]
    packed = writer.history.trials[0]
    assert isinstance(packed, PackedRecords)
    assert packed.nbytes * 4 < len(json.dumps(second))  # held in a quarter of its JSON


def test_our_write_coming_back_is_told_from_a_forged_one_by_its_digest() -> None:
    """What the operator keeps of each status it wrote is a digest (store.json_digest),
    not the status: its own write is still told from anyone else's."""
    api = FakeTrials()
    writer, _ = make_writer(api)
    asyncio.run(writer.flush_trial(0))
    written = api.patches[-1][1]
    echo = {"metadata": {"resourceVersion": "elsewhere"}, "status": json.loads(json.dumps(written))}
    assert writer.ours.trial_write_is_ours(0, echo)
    echo["status"]["history"][0]["step"] = 99
    assert not writer.ours.trial_write_is_ours(0, echo)
    assert isinstance(writer.ours.written_status[0], bytes)


def test_the_engine_lets_go_of_the_events_the_writer_filed_and_nothing_is_lost() -> None:
    """Memory: once filed (and read by the metrics' watcher) an event is not held by the
    engine any more (kubetune/eventlog.py), late reports included; what the HPOTrials
    carry is every event still, and the engine decides as before."""
    spec = make_spec(budget={"maxTrials": 3, "parallelTrials": 2})
    driver = Driver(spec, name="e")
    api = FakeTrials()
    experiment = fake_experiment(driver.engine, api)
    experiment.observer = Observer(metrics=False)
    experiment.event = _no_event
    writer = StatusWriter(experiment, HistoryRecords(experiment))  # type: ignore[arg-type]
    writer.trial_uids = {n: f"u{n}" for n in range(3)}
    writer.trial_status = lambda trial, records: {"history": records}  # type: ignore[method-assign]
    writer.write_experiment_status = _no_status  # type: ignore[method-assign]
    events_seen = 0

    async def persist() -> None:
        nonlocal events_seen
        await writer.persist()
        events_seen = len(driver.engine.history)
        assert driver.engine.history.first_held == events_seen  # none held

    async def scenario() -> None:
        driver.decide()
        await persist()
        for step in (1, 2, 3):
            driver.report(0, step, 1.0 / step)
            writer.note_late_report() if step == 2 else await persist()
        driver.report(1, 1, 0.5)
        assert driver.exit(0) and driver.exit(1)
        driver.decide()  # trial 2 starts
        await persist()
        driver.report(2, 1, 0.25)
        assert driver.exit(2)
        driver.decide()
        await persist()

    asyncio.run(scenario())
    assert driver.finished is not None and driver.engine.best() is not None
    assert driver.engine.best().value == 0.25  # type: ignore[union-attr]
    last = {name: patch["history"] for name, patch in api.patches}  # each trial's last
    filed = [r["seq"] for h in [*last.values(), writer.history.experiment_records] for r in h]
    assert sorted(filed) == list(range(writer.history.next_seq)) == list(range(events_seen))
    assert [r.get("step") for r in last["e-0"] if r["type"] == "Reported"] == [1, 2, 3]


async def _no_event(*_: object) -> None:
    return None


async def _no_status(force: bool = False) -> None:
    return None


def test_a_status_without_a_digest_is_never_taken_for_the_one_written() -> None:
    """json_digest gives None for what it cannot serialize: None equals None, but such a
    status is written, never skipped as unchanged."""
    ours = Authorship({})
    assert not ours.trial_unchanged(0, None)  # nothing written yet, no digest either
    ours.wrote_trial(0, None)
    assert not ours.trial_unchanged(0, None)
    digest = store.json_digest({"phase": "Running"})
    ours.wrote_trial(0, digest)
    assert ours.trial_unchanged(0, digest)
    ours.foreign_trial_status[0] = {"phase": "Forged"}
    assert not ours.trial_unchanged(0, digest)


def test_our_versions_of_a_trial_are_recognized_and_bounded() -> None:
    ours = Authorship({})
    foreign = {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Forged"}}
    assert not ours.trial_write_is_ours(0, foreign)
    assert ours.trial_versions == {}  # asking keeps nothing (10,000 trials asked about)
    for version in range(1, 21):
        ours.note_trial_version(0, str(version))
    assert ours.trial_versions[0] == [str(v) for v in range(13, 21)]
    assert ours.trial_write_is_ours(0, {"metadata": {"resourceVersion": "20"}})
    assert not ours.trial_write_is_ours(0, foreign)


class SlowTrials(FakeTrials):
    """Each patch takes 20 ms; notes how many are in flight, and when each ends."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self.ended: dict[str, float] = {}

    async def patch_trial_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        self.ended[name] = asyncio.get_running_loop().time()
        return await super().patch_trial_status(namespace, name, patch)


TRIALS = 200


def test_late_writes_leave_most_slots_to_the_writes_a_report_waits_for() -> None:
    # 200 running trials, each with an answered report not yet durable; then a rung's
    # report of the last trial is written ahead while the late writer works through the rest.
    api = SlowTrials()
    engine = fake_engine(TRIALS)
    experiment = fake_experiment(engine, api)
    writer = StatusWriter(experiment, HistoryRecords(experiment))  # type: ignore[arg-type]
    writer.trial_uids = {n: f"u{n}" for n in range(TRIALS)}
    writer.trial_status = lambda trial, records: {"history": records}  # type: ignore[method-assign]
    for n in range(TRIALS):
        engine.history.append(TrialLaunched(n, 1, False, 27, 0.0))
    writer.note_new_events()

    async def scenario() -> float:
        await asyncio.gather(*(writer.flush_trial(n) for n in range(TRIALS)))
        api.most_in_flight = 0  # those were written ahead: 16 at once
        for n in range(TRIALS):
            engine.history.append(Reported(n, 1, 1, {"loss": 1.0}, Verdict.go_on(), None, 0.0))
            writer.late_reports |= writer.history.note_new_events()
        late = asyncio.create_task(writer.write_late_reports())
        await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        engine.history.append(Reported(TRIALS - 1, 1, 3, {"loss": 1.0}, Verdict.go_on(), 1, 1.0))
        writer.note_new_events()
        await writer.flush_trial(TRIALS - 1)  # the rung's report: answered once this returns
        waited = asyncio.get_running_loop().time() - started
        await late
        return waited

    waited = asyncio.run(scenario())
    assert not writer.late_reports and not writer.dirty_trials
    assert api.most_in_flight <= writes.LATE_WRITES_AT_ONCE + 1
    # It did not queue behind the 200 late writes (50 rounds of 4, 1 s; with all 16
    # slots theirs, 12 rounds before it: 0.24 s): a slot was free at once.
    assert waited < 0.1, waited
    last = f"t{TRIALS - 1}"
    assert api.ended[last] < max(api.ended.values())
    assert len([name for name, _ in api.patches if name == last]) == 2  # not written again


def two_trial_writer(api: FakeTrials) -> tuple[StatusWriter, Any]:
    writer, engine = make_writer(api)
    engine.trials.append(fake_trial(1))
    writer.trial_uids[1] = "u1"
    engine.history.append(TrialLaunched(1, 1, False, 27, 0.0))
    writer.note_new_events()
    return writer, engine


def test_a_trials_late_reports_go_with_its_next_write_ahead_within_the_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each trial's late write is due a delay after its own oldest late report: trial 0,
    whose rung comes within the delay, is written once (the rung's write carries its
    late reports); trial 1, whose reports stop, once at its own deadline. With one
    experiment-wide tick, the tick that trial 1's report started wrote trial 0's late
    reports too, and the rung wrote it again: three writes, not two."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.3)
    api = FakeTrials()
    writer, engine = two_trial_writer(api)

    async def scenario() -> None:
        await asyncio.gather(writer.flush_trial(0), writer.flush_trial(1))
        api.patches.clear()
        engine.history.append(Reported(1, 1, 1, {"loss": 1.0}, Verdict.go_on(), None, 0.0))
        writer.note_late_report()
        await asyncio.sleep(0.2)
        for step in (1, 2):
            engine.history.append(report(step))
            writer.note_late_report()
            await asyncio.sleep(0.1)  # trial 1's deadline passes after step 2
        await asyncio.sleep(0.05)
        engine.history.append(Reported(0, 1, 3, {"loss": 1.0}, Verdict.go_on(), 0, 0.0))
        writer.note_new_events()  # trial 0's rung, within its delay: written ahead
        await writer.flush_trial(0)
        await asyncio.sleep(0.5)  # no late write of trial 0 is left to make

    asyncio.run(scenario())
    assert [(name, len(patch["history"])) for name, patch in api.patches] == [
        ("t1", 2),
        ("t0", 4),
    ]
    assert not writer.late_reports and not writer.late_due


def test_a_late_report_arriving_during_its_trials_write_is_written_a_delay_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.1)
    api = FakeTrials()
    writer, engine = make_writer(api)
    sent = asyncio.Event()

    async def slow_patch(namespace: str, name: str, patch: dict[str, Any]) -> str:
        api.patches.append((name, patch))
        sent.set()
        await asyncio.sleep(0.2)
        return str(len(api.patches))

    async def scenario() -> None:
        await writer.flush_trial(0)
        api.patch_trial_status = slow_patch  # type: ignore[method-assign]
        engine.history.append(report(1))
        writer.note_late_report()
        await sent.wait()  # the late write of step 1 is in flight
        engine.history.append(report(2))
        writer.note_late_report()
        assert 0 in writer.late_due  # due anew, not forgotten with the write in flight
        await asyncio.sleep(0.6)

    asyncio.run(scenario())
    assert [len(patch["history"]) for _, patch in api.patches] == [1, 2, 3]
    assert writer.durable(0) and not writer.late_due


@pytest.mark.parametrize(
    ("resume", "earlier_last_steps", "first_step", "read"),
    [
        (False, [], 1, False),  # a fresh attempt starts at 0 whichever report comes first
        (False, [], 0, True),  # a report of step 0: the start is just before it
        (True, [10], 11, False),  # resumed past where its predecessor stopped
        (True, [10], 10, True),  # resumed from an older checkpoint: it says where
        (True, [10], 4, True),
        (True, [], 3, False),  # resumed, but nothing reported before: as a fresh one
    ],
)
def test_an_attempts_first_report_is_read_only_where_it_says_where_it_started(
    resume: bool, earlier_last_steps: list[int], first_step: int, read: bool
) -> None:
    """`start_read_from` against `trained_from` itself: the first report is read by a
    decision exactly when a later first report would give another start."""
    attempts = [Attempt(n, False, None, last_step=s) for n, s in enumerate(earlier_last_steps)]
    attempts.append(Attempt(len(attempts), resume, None))
    assert start_read_from(attempts, first_step) is read
    later = [trained_from(attempts, step) for step in range(first_step, first_step + 30)]
    assert (len(set(later)) > 1) is read


def test_a_fresh_attempts_first_report_is_written_late_unless_a_decision_reads_it() -> None:
    """The report path's own question (operator/controller.py): a fresh attempt's first
    report at step 1 is answered before it is durable (one HPOTrial write per attempt
    fewer: bench/scale.py's open loop); a report of step 0 says where training started
    (`Attempt.consumed`, the cost per step) and is written ahead, as is a first report
    at a rung."""
    spec = make_spec(budget={"maxTrials": 1, "parallelTrials": 1})
    driver = Driver(spec, name="e")
    driver.decide()
    trial = driver.engine.trials[0]
    must_keep = driver.engine.scheduler.must_keep
    assert not start_report(trial, 1) and start_report(trial, 0)
    before = len(driver.engine.history)
    driver.report(0, 1, 0.5)
    new = list(driver.engine.history[before:])
    assert late_report(new, start_report(trial, 1), must_keep)
    assert not late_report(new, True, must_keep)  # as it was for every attempt's first
    assert not start_report(trial, 2)  # no longer the first either way


def test_a_node_noted_while_its_trials_write_is_in_flight_is_written_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write took its status before the node was noted and nothing else changed:
    before, the write's end cleared the node as written, and it never was."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.1)
    api = SlowTrials()
    writer, _ = make_writer(api)

    async def scenario() -> None:
        write = asyncio.create_task(writer.flush_trial(0))
        await asyncio.sleep(0.005)  # the status is built and on its way
        writer.note_node(0, "node-a")
        await write
        await asyncio.sleep(0.4)

    asyncio.run(scenario())
    assert [patch["node"] for _, patch in api.patches] == [None, "node-a"]
    assert not writer.late_nodes and not writer.late_due


def test_at_exit_every_late_write_goes_out_at_once() -> None:
    """A SIGTERMed operator has 10 s for its late writes (handlers._cleanup), and no
    write-ahead is left to keep slots for: 200 late trials are not written 4 at a time."""
    api = SlowTrials()
    engine = fake_engine(TRIALS)
    experiment = fake_experiment(engine, api)
    writer = StatusWriter(experiment, HistoryRecords(experiment))  # type: ignore[arg-type]
    writer.trial_uids = {n: f"u{n}" for n in range(TRIALS)}
    writer.trial_status = lambda trial, records: {"history": records}  # type: ignore[method-assign]
    engine.history += [TrialLaunched(n, 1, False, 27, 0.0) for n in range(TRIALS)]
    writer.late_reports |= writer.history.note_new_events()
    asyncio.run(writer.write_late_reports(at_exit=True))
    assert not writer.late_reports and len(api.patches) == TRIALS
    assert api.most_in_flight > writes.LATE_WRITES_AT_ONCE


class FakeLogs:
    def __init__(self) -> None:
        self.followed: list[str] = []

    async def follow(self, namespace: str, pod: str, *_: Any) -> None:
        self.followed.append(pod)


def test_after_a_restart_a_pods_log_is_read_only_if_it_does_not_report_through_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attempt's first SDK report, and status.sdkAttempt with it, may be written late:
    an operator restarted before it was gives each running pod `LOG_FOLLOW_GRACE_SECONDS`
    to report through the SDK before it reads its log for `name=value` lines (read from
    its start: a script without the SDK loses nothing, its reports come later)."""
    monkeypatch.setattr(podwatch, "LOG_FOLLOW_GRACE_SECONDS", 0.2)
    logs = FakeLogs()
    experiment = SimpleNamespace(
        namespace="ns", spec=SimpleNamespace(scheduler=SimpleNamespace(resource="step"))
    )
    writer = SimpleNamespace(sdk_attempts={})
    watch = podwatch.PodWatch(experiment, writer, None, logs)  # type: ignore[arg-type]

    def pod(name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "trial"}]},
            "status": {"phase": "Running"},
        }

    async def scenario() -> None:
        grace = podwatch.LOG_FOLLOW_GRACE_SECONDS  # what the reconcile at a load gives
        watch._follow_logs(pod("sdk-a1"), 0, 1, grace)
        watch._follow_logs(pod("script-a1"), 1, 1, grace)
        watch._follow_logs(pod("new-a1"), 2, 1, 0.0)  # a pod started since: read at once
        await asyncio.sleep(0.01)
        assert logs.followed == ["new-a1"]
        await asyncio.sleep(0.05)
        watch.sdk_reported(0, 1)  # its next report, within the grace
        await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert logs.followed == ["new-a1", "script-a1"]


class CreatingTrials(FakeTrials):
    """HPOTrials created (as the API server returns them) and status patches."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, Any]] = []

    async def create_trial(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        made = json.loads(json.dumps(body))
        made["metadata"].update(uid="u0", resourceVersion="1")
        self.created.append(made)
        return made


def test_a_new_trials_launch_goes_with_its_creation_and_its_status_follows_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One write fewer for each new trial: its plan and launch are durable in the
    HPOTrial's creation (names.ANNOTATION_FIRST_RECORDS), and a restarted operator
    reads them there until a status is written (operator/loading.py)."""
    monkeypatch.setattr(writes, "REPORT_WRITE_SECONDS", 0.05)
    api = CreatingTrials()
    writer, engine = make_writer(api)
    writer.trial_uids = {}
    writer.experiment.uid = "uid-e"
    engine.trials[0].params, engine.trials[0].bracket = {"lr": 0.1}, 0

    async def scenario() -> None:
        await writer.flush_trial(0)
        assert len(api.created) == 1 and api.patches == []
        assert writer.durable(0) and writer.trial_uids == {0: "u0"}
        await asyncio.sleep(0.3)  # its status, shown within the late delay

    asyncio.run(scenario())
    assert [len(patch["history"]) for _, patch in api.patches] == [1]
    created = api.created[0]
    reader = loading.HistoryReader(writer.experiment.signer)
    stored = reader.add_trial(created)
    assert stored.first_records_only and reader.refused == [0]
    assert [event for _, event in reader.take_events()] == [TrialLaunched(0, 1, False, 27, 0.0)]

    # A record changed by someone allowed to edit HPOTrials is refused by its MAC.
    annotations = created["metadata"]["annotations"]
    key = next(iter(annotations))
    forged = json.loads(annotations[key])
    forged[0]["target"] = 1
    tampered = {
        **created,
        "metadata": {**created["metadata"], "annotations": {key: json.dumps(forged)}},
    }
    reader = loading.HistoryReader(writer.experiment.signer)
    assert not reader.add_trial(tampered).records.unpack() and reader.refused == [1]
    # Not JSON: nothing read (the trial's plan is made again, as with no history at all).
    garbage = {**created, "metadata": {**created["metadata"], "annotations": {key: "{"}}}
    assert not loading.HistoryReader(writer.experiment.signer).add_trial(garbage).first_records_only
    # Nested thousands deep (within the size bound): nothing read, nothing raised.
    deep = {**created, "metadata": {**created["metadata"], "annotations": {key: "[" * 9000}}}
    assert not loading.HistoryReader(writer.experiment.signer).add_trial(deep).first_records_only
    # A status emptied of its history by someone: the annotation does not stand in for it.
    emptied = {**created, "status": {"phase": "Running"}}
    reader = loading.HistoryReader(writer.experiment.signer)
    assert not reader.add_trial(emptied).first_records_only
    # Once a status holds a history, the annotation is not read.
    written = {**created, "status": {"history": api.patches[0][1]["history"]}}
    reader = loading.HistoryReader(writer.experiment.signer)
    assert not reader.add_trial(written).first_records_only
