"""One experiment on the cluster: its engine, and the objects that carry its decisions out.

Level-triggered and idempotent, in controller-runtime's manner: `step()` may run at any
time, any number of times. A step (decide, write ahead, start what was decided) holds
the experiment's lock; what changes the engine outside a step (a report, a pod that
ended, a suggestion) does so without an await, so it never interleaves with another
change and needs no lock, and never waits for a step's writes. Every change is
written to the experiment's custom resources before anything acts on it, so an operator
killed at any moment and started again rebuilds the same engine from the API server
(`load`) and goes on: no trial is duplicated, no report a decision reads and no attempt's last
value is lost (reports no decision reads are written a few seconds late:
operator/writes.py).

kubetune owns its objects, level-triggered:

* An HPOTrial deleted by hand is put back from the engine's state (which holds its whole
  history) as soon as the operator hears of it (the watch, or a 404 when writing it),
  with an Event `TrialRestored`; its running pod, garbage-collected with the old object,
  counts as an interruption and the trial resumes from its checkpoint. One deleted while
  the operator was down took its history with it: the trial is planned again and runs
  anew (`store.repair`), or, when the history left cannot be replayed, the experiment
  fails with the condition `HistoryUnreadable` saying why. Loading never raises.
* A status written by anyone else (an HPOTrial's or the experiment's) is written again
  from the engine's state (Event `StatusRestored`): on the watch event it causes, and
  at every load; keys the writer added are removed (`status.restoring_patch`).
* History records carry a MAC (`store.HistorySigner`); records without a valid one are
  refused at load (Event `HistoryRecordRefused`, metric
  `kubetune_history_records_refused_total`) and never replayed; a history whose every
  record is refused fails the experiment. Signed records deleted are told (Event
  `HistoryRecordsMissing`, metric `kubetune_history_records_missing_total`); records a
  killed operator never wrote are not (`gaps.py`: each record says what was durable).
* An HPOTrial or pod found under the operator's name that it does not own is left as it
  is and fails its trial (Event `TrialObjectNameTaken`); a trial pod that lost its owner
  (HPOTrial deleted with `--cascade=orphan`) is deleted (Event `OrphanedPodDeleted`).
* A pod the API server refuses (a 4xx: invalid, forbidden by Pod Security) fails its
  trial with the API's message as the reason (Event `TrialPodRefused`; it counts toward
  `maxFailedTrials`); a pod refused for an exceeded quota waits and is created again
  with back-off (Event `TrialWaitingForQuota`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from kubetune.events import Event, TrialExploited
from kubetune.ingest import Report, ReportTarget
from kubetune.observability import Observer
from kubetune.offloop import SuggestionWorker
from kubetune.operator import repair
from kubetune.operator.actions import PodActions
from kubetune.operator.experiment import Experiment, OperatorConfig
from kubetune.operator.history import HistoryRecords, late_report, start_report
from kubetune.operator.kube import Kube
from kubetune.operator.logs import LogStreams
from kubetune.operator.podwatch import PodWatch
from kubetune.operator.rebuild import HISTORY_UNREADABLE, Rebuilder
from kubetune.operator.trim import release_freed_memory
from kubetune.operator.writes import StatusWriter
from kubetune.spec import ExperimentSpec
from kubetune.trials import TrialRecord, Verdict

__all__ = ["HISTORY_UNREADABLE", "ExperimentController", "OperatorConfig"]


class ExperimentController(Experiment):
    """The experiment (kubetune.operator.experiment: identity, engine, lock) and its
    parts, each with one job:

    * `history` (history.HistoryRecords): the engine's events as signed, numbered records;
    * `writer` (writes.StatusWriter): the durable writes of HPOTrials and statuses;
    * `actions` (actions.PodActions): the engine's actions carried out with pods;
    * `pods` (podwatch.PodWatch): what pods tell (ends, nodes, log metric lines);
    * `rebuilder` (rebuild.Rebuilder): the engine rebuilt from the stored histories.

    The methods here are what the handlers, the report endpoint and the capacity loop
    call; each hands over to a part."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        sampler: SuggestionWorker,
        body: dict[str, Any],
        spec: ExperimentSpec,
        logs: LogStreams | None = None,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(kube, config, body, spec, observer)
        self.history = HistoryRecords(self)
        self.writer = StatusWriter(self, self.history)
        self.actions = PodActions(self, self.writer, sampler)
        self.pods = PodWatch(self, self.writer, self.actions, logs)
        self.rebuilder = Rebuilder(self, self.history, self.writer, self.pods)

    async def load(self) -> None:
        """Rebuild the engine from the custom resources (never raises on what it finds)."""
        await self.rebuilder.load()
        release_freed_memory()  # the rebuild's peak: every HPOTrial read and replayed

    async def step(self) -> None:
        await self.actions.step_soon()

    async def report(self, report: Report) -> Verdict:
        if self.loaded:
            # Not under the lock: a step holds it through its writes and creations, and
            # a report waiting for them took seconds at 200 running trials (its own
            # write-ahead, when it needs one, is below). The engine's part has no await,
            # so no other change interleaves with it.
            trial, new, verdict, late = self._take_report(report)
        else:
            async with self.lock:  # held by the rebuild until the engine is whole
                trial, new, verdict, late = self._take_report(report)
        # What a decision reads is durable before it is answered, but outside the lock:
        # reports of many trials are written at once, and those of one trial share writes.
        # A gang's rank > 0 records nothing (it is told rank 0's decision, written ahead
        # if it was one): it never writes rank 0's late reports (one write a step before).
        ranked = report.rank > 0 and not report.flush
        if (
            not late
            and not ranked
            and (new or report.flush or not self.writer.durable(trial.number))
        ):
            # pbt: an exploit's plan is filed under the new trial, and it is durable before
            # the stop that names it, so no crash leaves a member replaced by nothing.
            for event in new:
                if isinstance(event, TrialExploited):
                    await self.writer.flush_trial(event.number)
            await self.writer.flush_trial(trial.number)
        self.writer.flush_soon()
        durable = ranked or self.writer.durable(trial.number)  # rank > 0: nothing to flush
        return replace(verdict, durable=durable)

    def _take_report(self, report: Report) -> tuple[TrialRecord, list[Event], Verdict, bool]:
        """The engine's part of a report (no await): the trial, the events it added, the
        verdict, and whether it may be written after it is answered."""
        # Events a step added and has not filed yet (it files them before its next
        # await, but a step holding the lock may be between two): filed now as writes
        # ahead, so that only this report's own event can be taken for a late one.
        self.writer.note_new_events()
        trial = self.engine.trial_by_name(report.trial)
        before = len(self.engine.history)
        first = start_report(trial, report.step)
        verdict = self.engine.report(
            trial.number, report.attempt, report.step, report.metrics, time.time(), report.rank
        )
        self.pods.sdk_reported(trial.number, report.attempt)
        # Recorded as the engine decided; answered "checkpoint and exit" when the
        # trial's node is being reclaimed (operator/notices.py).
        verdict = self.pods.notices.answer(trial.number, report.attempt, verdict)
        new = list(self.engine.history[before:])
        late = (
            not report.flush
            and not verdict.checkpoint_and_exit  # its attempt's last report
            and late_report(new, first, self.engine.scheduler.must_keep)
        )
        if late:
            self.writer.note_late_report()
        else:
            self.writer.note_new_events()
        return trial, new, verdict, late

    async def pod_changed(self, pod: dict[str, Any], deleted: bool) -> None:
        if not deleted:
            self.token_secrets.pod_changed(pod, self.writer.trial_uids)
        await self.pods.pod_changed(pod, deleted)

    async def trial_changed(self, body: dict[str, Any], deleted: bool) -> None:
        """An HPOTrial of this experiment changed: one deleted is put back, a status
        written by anyone else is written again."""
        await repair.trial_changed(self, self.writer, body, deleted)

    async def experiment_status_seen(self, body: dict[str, Any]) -> None:
        """The experiment changed and its spec did not (a status write, ours or not)."""
        await repair.experiment_status_seen(self, self.writer, body)

    async def spec_changed(self, body: dict[str, Any], spec: ExperimentSpec) -> None:
        """A new generation: only the budget may differ (the CRD refuses other changes)."""
        async with self.lock:
            self.body, self.spec = body, spec
            self.generation = body["metadata"].get("generation", self.generation)
            self.engine.update_spec(spec)
            if self.engine.reopen(time.time()):
                await self.event("Budget raised: the experiment continues", "ExperimentReopened")
            await self.actions.step_locked()

    async def capacity_update(
        self,
        usd: float,
        trial_usd_per_hour: float,
        condition: dict[str, Any] | None,
        accounted_at: float | None = None,
    ) -> None:
        """The capacity loop's hook: cost so far, accounted up to `accounted_at`
        (status.costUSD and costAccountedAt, and a CostObserved event for the engine's
        maxCostUSD decisions) and the node pool's condition."""
        async with self.lock:
            if not self.loaded:
                return
            self.cost_usd, self.cost_at = usd, accounted_at
            self.capacity_conditions = [condition] if condition else []
            if self.engine.observe_cost(usd, trial_usd_per_hour, time.time()):
                await self.actions.step_locked()  # the budget may refuse work now
            else:
                await self.writer.write_experiment_status()

    def close(self) -> None:
        """The experiment was deleted: write nothing more for it."""
        self.closed = True

    def target(self) -> ReportTarget:
        return ReportTarget(self.tokens, self.report, lambda: (t.name for t in self.engine.trials))
