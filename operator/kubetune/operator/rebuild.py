"""Rebuilding an experiment's engine from its custom resources (after a restart, or when
the operator first sees it), then reconciling with its pods.

Never raises on what it finds: foreign objects and records are left out (with an
Event), lost plans are made again, and a history that still cannot be replayed fails
the experiment with the condition `HistoryUnreadable` saying why."""

from __future__ import annotations

import logging
import time

from kubetune.operator import gaps, ownership, parents, store
from kubetune.operator.experiment import Experiment
from kubetune.operator.history import HistoryRecords
from kubetune.operator.loading import HistoryReader, StoredTrial, read_again_as_legacy, replay
from kubetune.operator.podwatch import PodWatch
from kubetune.operator.status import failed_status
from kubetune.operator.writes import StatusWriter
from kubetune.tokens import release_0_scope

logger = logging.getLogger(__name__)

HISTORY_UNREADABLE = "HistoryUnreadable"


class Rebuilder:
    def __init__(
        self,
        experiment: Experiment,
        history: HistoryRecords,
        writer: StatusWriter,
        pods: PodWatch,
    ) -> None:
        self.experiment = experiment
        self.history = history
        self.writer = writer
        self.pods = pods

    async def load(self) -> None:
        """Rebuild the engine from the custom resources, then reconcile with the pods."""
        exp, history, writer = self.experiment, self.history, self.writer
        async with exp.lock:
            # Read a page of HPOTrials at a time, each history checked, decoded and
            # packed as it comes (operator/loading.py): not every record held as JSON.
            reader = HistoryReader(exp.signer)
            experiment_records = reader.add((exp.body.get("status") or {}).get("history") or [])
            trials: list[StoredTrial] = []
            async for page in exp.kube.trial_pages(exp.namespace, exp.name):
                for body in page:
                    if ownership.is_ours(exp, body):
                        trials.append(reader.add_trial(body))
                        continue
                    await exp.event(
                        f"HPOTrial {body['metadata']['name']} is not one of this "
                        f"experiment's trials: ignored",
                        "ForeignTrialIgnored",
                        True,
                    )
            if reader.needs_legacy_reading:
                reader, experiment_records = read_again_as_legacy(reader, trials)
            owners = ["the experiment"] + [t.name for t in trials]
            if sum(reader.refused) and not reader.accepted_any:
                # Every record refused (MACs stripped, say): starting the search over
                # would reuse the names of the trials that are there.
                await self._report_refused(owners, reader.refused)
                await self._fail_to_load(ValueError("every history record was refused"))
                return
            try:
                replayed = replay(exp.spec, exp.name, reader)
            except Exception as error:
                await self._fail_to_load(error)
                return
            exp.engine = replayed.engine
            for trial in trials:
                writer.trial_uids[trial.number] = trial.uid
                if trial.node:
                    writer.nodes[trial.number] = trial.node
                self.pods.restore_sdk_attempt(trial.number, trial.status)
            holes = reader.holes()
            history.restore(
                replayed.events,
                replayed.next_seq,
                experiment_records,
                {trial.number: trial.records for trial in trials},
                holes.to_carry(),
            )
            # Pods launched by kubetune v0.1.0 hold tokens of its scope (no UID): they
            # keep reporting after an upgrade (their launch records are version 0).
            exp.tokens.accept_release_0(
                release_0_scope(exp.namespace, exp.name),
                (exp.engine.trial_name(t.number) for t in trials if t.release_0),
            )
            await self._report_refused(owners, reader.refused)
            if holes.lost:
                logger.info(
                    "experiment %s/%s: %d history records a stopped operator never wrote",
                    exp.namespace,
                    exp.name,
                    gaps.count(holes.lost),
                )
            await self._report_missing(holes.missing)  # refused ones are told above
            for seq, plan in replayed.made:
                history.add_plan(seq, plan)
                writer.dirty_trials.add(plan.number)
                await exp.event(
                    f"Trial {exp.engine.trial_name(plan.number)} lost its history (its "
                    f"HPOTrial was deleted while the operator was down): it runs again",
                    "TrialReplanned",
                    True,
                )
            for trial in trials:
                await self._put_back_status(trial, reader.legacy)
            if exp.engine.needs_warm_start():  # spec.warmStart: read once, at the start
                exp.load_failure = await parents.start(
                    exp.kube, exp.config.token_key, exp.body, exp.generation, exp.engine
                )
                if exp.load_failure is not None:
                    return
            if exp.engine.reopen(time.time()):
                writer.note_new_events()
            await self.pods.reconcile()
            await writer.persist()
            exp.loaded = True
            logger.info(
                "experiment %s/%s rebuilt from %d events", exp.namespace, exp.name, replayed.events
            )

    async def _put_back_status(self, trial: StoredTrial, legacy: bool) -> None:
        """An HPOTrial's status anyone else wrote is written again from the engine's."""
        exp, writer = self.experiment, self.writer
        number = trial.number
        if number >= len(exp.engine.trials):
            return
        # The watch delivers these versions again: they are known, not news.
        writer.ours.note_trial_version(number, trial.version)
        kept = self.history.compact(self.history.trials[number])
        expected = store.json_digest(writer.trial_status(exp.engine.trials[number], kept))
        writer.ours.written_status[number] = expected
        if expected is None or trial.status_digest != expected:
            writer.dirty_trials.add(number)
            writer.ours.foreign_trial_status[number] = trial.status
            # A trial created with its history and killed before its first status
            # write: written now, and no one else is to blame.
            if not legacy and not trial.first_records_only:
                await ownership.status_restored(exp, f"HPOTrial {trial.name}")

    async def _report_refused(self, owners: list[str], refused: list[int]) -> None:
        exp = self.experiment
        total = sum(refused)
        if not total:
            return
        exp.observer.history_records_refused(exp.namespace, exp.name, total)
        where = ", ".join(f"{n} of {owner}" for owner, n in zip(owners, refused, strict=True) if n)
        message = (
            f"{total} history records without a valid MAC refused ({where}): written by "
            f"someone other than the operator, not replayed"
        )
        logger.warning("experiment %s/%s: %s", exp.namespace, exp.name, message)
        await exp.event(message, "HistoryRecordRefused", True)
        self.writer.dirty_trials.update(self.history.trials)  # written again without them

    async def _report_missing(self, missing: list[gaps.Run]) -> None:
        """Signed records deleted from a history (operator/gaps.py; a whole HPOTrial's
        too, told besides as TrialReplanned) are told: Event `HistoryRecordsMissing` and
        a metric. What is left replayed (it did, or loading failed already); it may lack
        reports."""
        exp = self.experiment
        if not missing:
            return
        total = gaps.count(missing)
        exp.observer.history_records_missing(exp.namespace, exp.name, total)
        message = (
            f"{total} history records missing (sequence numbers {gaps.describe(missing)}): deleted "
            f"by someone other than the operator; the rest is replayed without them"
        )
        logger.warning("experiment %s/%s: %s", exp.namespace, exp.name, message)
        await exp.event(message, "HistoryRecordsMissing", True)

    async def _fail_to_load(self, error: Exception) -> None:
        """The stored history cannot be replayed: the experiment fails, saying why, and
        its pods (which nothing can decide for now) are deleted."""
        exp = self.experiment
        message = (
            f"the stored history cannot be replayed ({type(error).__name__}: "
            f"{str(error)[:200]}); an HPOTrial deleted, or records refused?"
        )
        exp.load_failure = message
        logger.warning("experiment %s/%s: %s", exp.namespace, exp.name, message)
        previous = (exp.body.get("status") or {}).get("conditions") or []
        status = dict(
            failed_status(HISTORY_UNREADABLE, message, exp.generation, previous, time.time())
        )
        await exp.kube.patch_experiment_status(exp.namespace, exp.name, status)
        await exp.event(message, HISTORY_UNREADABLE, True)
        for pod in await exp.kube.list_pods(exp.namespace, exp.name):
            await exp.kube.delete_pod(exp.namespace, pod["metadata"]["name"], 0)
