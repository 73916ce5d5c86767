"""The durable writes: each trial's HPOTrial (created, its status and history patched,
put back when someone deleted it) and the experiment's status.

Trial histories and experiment-level events are written before anything acts on them
(`persist`); derived summaries (counts, best) wait for a flush that coalesces
many changes (`flush_soon`). Writes of one HPOTrial go through one CoalescedWriter,
so they never overlap and a caller's change is durable when its flush returns.

Reports that no decision reads (`store.decisions_read`: no decision, no rung, not a
step the scheduler reads, not an attempt's first where it says where the attempt
started) are answered before they are durable and written with the trial's next write,
or `REPORT_WRITE_SECONDS` after the oldest of them (`note_late_report`), or, when the
trial's attempt is about to reach the step written ahead for certain, with that write
(up to `REPORT_WRITE_SECONDS` later again: operator/latedue.py). At a report a
second per trial, an attempt of ten reports between rungs costs three HPOTrial writes:
its launch, its rung and its end; a new trial's launch goes with its HPOTrial's
creation instead (its history so far in names.ANNOTATION_FIRST_RECORDS, read by a
restarted operator until a status holds one: operator/loading.py), and its status
(phase, parameters) shows with its next write or within REPORT_WRITE_SECONDS.

What a SIGKILLed operator can lose is only such reports; the SDK sends its last one
again, with `flush`, before its process exits, so no attempt's final value is lost
(tests/operator/test_durability.py). Any write-ahead write of the trial (a rung, its
attempt's end) carries the late ones with it: a status is always written whole.
A trial's node is written the same way, with its next write (`note_node`), and a write
that would send the status last written is not sent.

An attempt's end is written ahead even when the report that told it to pause or stop
is durable and its phase follows from it: a late end keeps every record made after it
from vouching for the records before (gaps.Watermark), so a deleted final report would
no longer be told (tests/operator/test_ownership.py); and with `maxCostUSD` the cost per
step reads when it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.operator import store
from kubetune.operator.authorship import Authorship
from kubetune.operator.coalesce import CoalescedWriter, each_at_most
from kubetune.operator.experiment import Experiment
from kubetune.operator.history import HistoryRecords, Record
from kubetune.operator.kube import CALLS_PER_EXPERIMENT
from kubetune.operator.latedue import postponement
from kubetune.operator.settings import env_seconds
from kubetune.operator.status import experiment_status, restoring_patch, written_trial_status
from kubetune.operator.trialcreation import carries_first_records, create_trial, first_records_json
from kubetune.shell.core import experiment_phase
from kubetune.trials import TrialPhase, TrialRecord

log = logging.getLogger(__name__)
REPORT_WRITE_SECONDS = env_seconds("KUBETUNE_REPORT_WRITE_SECONDS", 15.0)
# A late write that failed (an API error) is tried again after this, even with no new
# report to start one (never sooner than a second: no tight loop against an API down).
REPORT_RETRY_SECONDS = max(REPORT_WRITE_SECONDS, 1.0)
# Late writes (answered reports, nodes) an experiment has in flight at once; they queue
# apart, and the rest of its CALLS_PER_EXPERIMENT stay free for write-ahead writes, which
# a report waits for. Every REPORT_WRITE_SECONDS the late writer has a write for each
# running trial (200 in bench/scale.py's open loop): queued on the shared slots, a
# rung's report waited behind all of them.
LATE_WRITES_AT_ONCE = 4


class StatusWriter:
    def __init__(self, experiment: Experiment, history: HistoryRecords) -> None:
        self.experiment = experiment
        self.history = history
        self.ours = Authorship(experiment.body)
        self.trial_uids: dict[int, str] = {}  # the HPOTrials that exist, by trial number
        self.nodes: dict[int, str] = {}
        self.sdk_attempts: dict[int, int] = {}  # status.sdkAttempt (PodWatch.sdk_reported)
        self.dirty_trials: set[int] = set()  # to be written before any decision acts
        self.late_reports: set[int] = set()  # answered reports not yet durable
        self.late_nodes: set[int] = set()  # a trial's node, written with its next write
        # When each trial's oldest late report or node must be written (monotonic).
        self.late_due: dict[int, float] = {}
        self.postponed: set[int] = set()  # late writes waiting for a write-ahead (latedue)
        self.report_flush: asyncio.Task[None] | None = None
        self.written_phases: dict[int, tuple[str, str]] = {}
        self.writers: dict[int, CoalescedWriter] = {}
        self.writing = asyncio.Semaphore(CALLS_PER_EXPERIMENT)  # statuses built at once
        self.late_writing = asyncio.Semaphore(LATE_WRITES_AT_ONCE)
        self.flush: asyncio.Task[None] | None = None
        self.written_experiment_history = 0
        self.last_status: dict[str, Any] | None = None
        # Trials whose HPOTrial name someone else's object holds: they fail at launch.
        self.name_taken: dict[int, str] = {}

    def note_new_events(self) -> None:
        self.dirty_trials |= self.history.note_new_events()

    def note_late_report(self) -> None:
        """The engine's one new event is a report no decision reads: written within
        REPORT_WRITE_SECONDS, with the trial's next write, not before it is answered."""
        numbers = self.history.note_new_events()
        self.late_reports |= numbers
        self.due_late(numbers, REPORT_WRITE_SECONDS)

    def note_node(self, number: int, node: str) -> None:
        """Trial `number` runs on `node`: shown in its status by its next write (its
        first decision's, usually) or within REPORT_WRITE_SECONDS, not by a write of its
        own (one HPOTrial write per attempt fewer)."""
        self.nodes[number] = node
        self.late_nodes.add(number)
        self.due_late({number}, REPORT_WRITE_SECONDS)

    def due_late(self, numbers: set[int], delay: float) -> None:
        """Each trial's late write is due `delay` after its oldest unwritten late change,
        not at one experiment-wide tick: a trial whose next write-ahead (a rung, its
        attempt's end) comes within the delay carries its late reports with it, and
        needs no write of their own (bench/scale.py: one HPOTrial write in three fewer)."""
        due = time.monotonic() + delay
        for number in numbers:
            self.late_due.setdefault(number, due)
        if self.report_flush is None or self.report_flush.done():
            self.report_flush = asyncio.create_task(write_late_when_due(self))

    def durable(self, number: int) -> bool:
        return number not in self.late_reports and number not in self.dirty_trials

    async def write_late_reports(
        self, numbers: list[int] | None = None, at_exit: bool = False
    ) -> None:
        """Write trials' late reports and nodes now: those of `numbers`, or all. At the
        operator's exit no write-ahead is left to keep slots for: every slot is theirs
        (200 running trials' late writes, 4 at a time, outlast the 10 s grace)."""
        late = self.late_reports | self.late_nodes
        chosen = late if numbers is None else late.intersection(numbers)
        limit = None if at_exit else self.late_writing
        await asyncio.gather(*(flush_late(self, n, limit) for n in sorted(chosen)))

    async def persist(self) -> None:
        """Write what changed. Trial histories and experiment-level events are written
        now (decisions wait for them); derived summaries may wait for a flush."""
        exp = self.experiment
        self.note_new_events()
        if self.history.moved_many:
            # Experiment-level events (the end, say) change trials' phases too; any other
            # event changes only its own trial, whose history grew (note_new_events).
            self.history.moved_many = False
            for trial in exp.engine.trials:
                if self.written_phases.get(trial.number) != (trial.phase.value, trial.reason):
                    self.dirty_trials.add(trial.number)
        ready = []
        for number in sorted(self.dirty_trials):
            if number >= len(exp.engine.trials):
                self.dirty_trials.discard(number)  # search exhausted before it was sampled
            elif exp.engine.trials[number].phase is not TrialPhase.SAMPLING:
                ready.append(number)  # a sampling trial is written with its parameters
        await each_at_most(CALLS_PER_EXPERIMENT, ready, self.flush_trial)
        events = exp.observer.trial_events(exp.namespace, exp.name, exp.engine)
        exp.engine.history.release(self.history.filed)  # read by all (eventlog.py)
        for event in events:
            await exp.event(*event)  # pauses, promotions, failures, interruptions
        phase = experiment_phase(exp.engine)
        urgent = (
            len(self.history.experiment_records) != self.written_experiment_history
            or self.last_status is None
            or phase != self.last_status.get("phase")
        )
        if urgent:
            await self.write_experiment_status()
        else:
            self.flush_soon()

    async def flush_trial(self, number: int) -> None:
        """Trial `number`'s HPOTrial as it is now, durable when this returns."""
        writer = self.writers.get(number)
        if writer is None:
            writer = CoalescedWriter(lambda: self._write_trial(number), self.writing)
            self.writers[number] = writer
        try:
            await writer.flush()
        finally:
            if writer.idle and self.writers.get(number) is writer:
                del self.writers[number]  # not kept for every trial the experiment ever had

    async def _write_trial(self, number: int) -> None:
        """Write one trial's status as it is now (only ever through its CoalescedWriter)."""
        exp = self.experiment
        if exp.closed:
            return
        trial = exp.engine.trials[number]
        if number in self.name_taken:
            self._written(number)  # nothing of ours to write it in
            return
        history = self.history.compact(self.history.trials[number])
        self.history.trials[number] = history
        node = self.nodes.get(number)
        phase = (trial.phase.value, trial.reason)
        written = len(history)
        # A copy: the client serializes in a thread while new events may be appended,
        # and only what this write sends becomes durable (gaps.Watermark).
        sent = list(history)
        shown = True
        if number not in self.trial_uids:
            first = first_records_json(sent)
            created = await create_trial(self, trial, first_records=first)
            if created is None:
                return
            # Created with its history (its plan and launch): durable without a status
            # write of its own; the status shows with its next write, a delay later at most.
            shown = first is None or not carries_first_records(created, first)
        if shown and not await self._patch_status(trial, sent, phase):
            return
        self.history.written(number, sent)
        if self.history.trials[number] is history and len(history) == written:
            self._written(number)  # nothing new arrived during the write
            if not shown or self.nodes.get(number) != node:  # or a node did: a delay later
                self.late_nodes.add(number)
                self.due_late({number}, REPORT_WRITE_SECONDS)

    async def _patch_status(
        self, trial: TrialRecord, sent: list[Record], phase: tuple[str, str]
    ) -> bool:
        """Whether the status was written (not unchanged, not its HPOTrial gone)."""
        exp, number = self.experiment, trial.number
        status = self.trial_status(trial, sent)
        digest = store.json_digest(status)
        if self.ours.trial_unchanged(number, digest):
            # A flush asked for what an earlier write already carried (the late writer
            # and a report's own write-ahead, say): nothing to send.
            self.written_phases[number] = phase
            self._written(number)
            return False
        self.ours.writing_status[number] = digest
        patch = restoring_patch(self.ours.foreign_trial_status.get(number), status)
        try:
            version = await exp.kube.patch_trial_status(exp.namespace, trial.name, patch)
        except ApiException as error:
            if error.status != 404:
                raise
            # Deleted by someone else: put back, with everything the engine holds.
            self.trial_uids.pop(number, None)
            if await create_trial(self, trial, restored=True) is None:
                return False
            version = await exp.kube.patch_trial_status(exp.namespace, trial.name, status)
        self.ours.note_trial_version(number, version)
        self.ours.wrote_trial(number, digest)
        self.written_phases[number] = phase
        return True

    def _written(self, number: int) -> None:
        self.history.settle(number)
        self.dirty_trials.discard(number)
        self.late_reports.discard(number)
        self.late_nodes.discard(number)
        self.late_due.pop(number, None)
        self.postponed.discard(number)

    def flush_soon(self, delay: float = 1.0) -> None:
        """Write the experiment's summaries (counts, best) within `delay`, once for many
        changes."""
        if self.flush is not None and not self.flush.done():
            return

        async def flush() -> None:
            await asyncio.sleep(delay)
            async with self.experiment.lock:
                await self.write_experiment_status()

        self.flush = asyncio.create_task(flush())

    def trial_status(self, trial: TrialRecord, history: list[Record]) -> dict[str, Any]:
        exp, number = self.experiment, trial.number
        node, sdk = self.nodes.get(number), self.sdk_attempts.get(number)
        uri = exp.checkpoint_uri(trial.name)
        return written_trial_status(exp.engine, exp.spec.workers, trial, history, node, uri, sdk)

    async def write_experiment_status(self, force: bool = False) -> None:
        exp = self.experiment
        if exp.closed:
            return
        records = list(self.history.experiment_records)
        status: dict[str, Any] = dict(
            experiment_status(
                exp.engine,
                exp.spec,
                exp.generation,
                (exp.cost_usd, exp.cost_at),
                records,
                (self.last_status or {}).get("conditions", []),
                exp.capacity_conditions,
                time.time(),
            )
        )
        if status == self.last_status and not force:
            return
        self.ours.writing_experiment = status
        patch = restoring_patch(self.ours.foreign_experiment_status, status)
        version = await exp.kube.patch_experiment_status(exp.namespace, exp.name, patch)
        self.ours.foreign_experiment_status = None
        self.history.written(None, records)
        self.ours.experiment_versions.append(version)
        self.last_status = status
        self.written_experiment_history = len(records)


async def write_late_when_due(writer: StatusWriter) -> None:
    """Write each trial's late changes when due (`StatusWriter.due_late`), or a while later
    when its attempt's write-ahead, about to come, will carry them (latedue.py)."""
    while writer.late_due and not writer.experiment.closed:
        await asyncio.sleep(max(min(writer.late_due.values()) - time.monotonic(), 0.0))
        now = time.monotonic()
        due = [n for n, at in sorted(writer.late_due.items()) if at <= now]
        due = [n for n in due if not postpone(writer, n, now)]
        for number in due:
            del writer.late_due[number]  # changes arriving during the write: due anew
            writer.postponed.discard(number)
        try:
            await writer.write_late_reports(due)
        except Exception as error:
            # Tried again: a trial that sends no further report (it hangs, or its
            # pod lingers) must not keep an answered report unwritten for ever.
            log.warning(
                "%s: writing reports failed (tried again in %.0f s): %s",
                writer.experiment.name,
                REPORT_RETRY_SECONDS,
                error,
            )
            late = (writer.late_reports | writer.late_nodes).intersection(due)
            writer.due_late(late, REPORT_RETRY_SECONDS)
            writer.postponed |= late  # a retry waits for no rung (twice the delay at most)


def postpone(writer: StatusWriter, number: int, now: float) -> bool:
    """Whether trial `number`'s late write, due now, waits (once) for the write-ahead
    its attempt is about to make, which carries it (operator/latedue.py)."""
    engine = writer.experiment.engine
    if number in writer.postponed or number >= len(engine.trials):
        return False
    try:
        trial, most = engine.trials[number], engine.scheduler.max_resource
        more = postponement(trial, most, time.time(), REPORT_WRITE_SECONDS)
    except Exception:  # a forecast must never stop the late writes: written now
        log.exception(
            "%s: forecasting trial %d's write-ahead failed", writer.experiment.name, number
        )
        return False
    if more is None:
        return False
    writer.postponed.add(number)
    writer.late_due[number] = now + more
    return True


async def flush_late(writer: StatusWriter, number: int, limit: asyncio.Semaphore | None) -> None:
    """One late write, at most LATE_WRITES_AT_ONCE at once (`limit`); none if a
    write-ahead of the trial carried it while it waited."""
    async with limit or contextlib.nullcontext():
        if number in writer.late_reports or number in writer.late_nodes:
            await writer.flush_trial(number)
