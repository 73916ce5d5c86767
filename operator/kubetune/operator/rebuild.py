"""Rebuilding an experiment's engine from its custom resources (after a restart, or when
the operator first sees it), then reconciling with its pods.

Never raises on what it finds: foreign objects and records are left out (with an
Event), lost plans are made again, and a history that still cannot be replayed fails
the experiment with the condition `HistoryUnreadable` saying why."""

from __future__ import annotations

import logging
import time
from typing import Any

from kubetune.engine import Engine
from kubetune.events import last_launch_version
from kubetune.operator import gaps, ownership, parents, store
from kubetune.operator.experiment import Experiment
from kubetune.operator.history import HistoryRecords
from kubetune.operator.podwatch import PodWatch
from kubetune.operator.status import failed_status
from kubetune.operator.writes import StatusWriter
from kubetune.schedulers import make_scheduler
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
            listed = await exp.kube.list_trials(exp.namespace, exp.name)
            trials = [t for t in listed if ownership.is_ours(exp, t)]
            for foreign in (t for t in listed if not ownership.is_ours(exp, t)):
                name = foreign["metadata"]["name"]
                await exp.event(
                    f"HPOTrial {name} is not one of this experiment's trials: ignored",
                    "ForeignTrialIgnored",
                    True,
                )
            stored = [(exp.body.get("status") or {}).get("history") or []]
            stored += [(t.get("status") or {}).get("history") or [] for t in trials]
            checked = store.check_histories(stored, exp.signer)
            owners = ["the experiment"] + [t["metadata"]["name"] for t in trials]
            if sum(checked.refused) and not any(checked.histories):
                # Every record refused (MACs stripped, say): starting the search over
                # would reuse the names of the trials that are there.
                await self._report_refused(owners, checked.refused)
                await self._fail_to_load(ValueError("every history record was refused"))
                return
            try:
                merged = store.merge_histories(checked.histories)
                events, made = store.repair(merged, make_scheduler(exp.spec, None))
                engine = Engine.replay(exp.spec, exp.name, (event for _, event in events))
            except Exception as error:
                await self._fail_to_load(error)
                return
            exp.engine = engine
            trial_records = {}
            for trial, records in zip(trials, checked.histories[1:], strict=True):
                number = trial["spec"]["number"]
                writer.trial_uids[number] = trial["metadata"]["uid"]
                trial_records[number] = records
                node = (trial.get("status") or {}).get("node")
                if node:
                    writer.nodes[number] = node
            accepted = {id(r) for h in checked.histories for r in h}
            refused = [r for h in stored for r in h if id(r) not in accepted]
            holes = gaps.find_holes(checked.histories, refused)
            history.restore(
                [seq for seq, _ in events],
                checked.histories[0],
                trial_records,
                holes.to_carry(),
            )
            # Pods launched by kubetune v0.1.0 hold tokens of its scope (no UID): they
            # keep reporting after an upgrade (their launch records are version 0).
            exp.tokens.accept_release_0(
                release_0_scope(exp.namespace, exp.name),
                (
                    exp.engine.trial_name(number)
                    for number, records in trial_records.items()  # as read, not packed
                    if last_launch_version(records) == 0
                ),
            )
            await self._report_refused(owners, checked.refused)
            if holes.lost:
                logger.info(
                    "experiment %s/%s: %d history records a stopped operator never wrote",
                    exp.namespace,
                    exp.name,
                    gaps.count(holes.lost),
                )
            await self._report_missing(holes.missing)  # refused ones are told above
            for seq, plan in made:
                history.add_plan(seq, plan)
                writer.dirty_trials.add(plan.number)
                await exp.event(
                    f"Trial {exp.engine.trial_name(plan.number)} lost its history (its "
                    f"HPOTrial was deleted while the operator was down): it runs again",
                    "TrialReplanned",
                    True,
                )
            for trial in trials:
                await self._put_back_status(trial, checked.legacy)
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
                "experiment %s/%s rebuilt from %d events", exp.namespace, exp.name, len(events)
            )

    async def _put_back_status(self, trial: dict[str, Any], legacy: bool) -> None:
        """An HPOTrial's status anyone else wrote is written again from the engine's."""
        exp, writer = self.experiment, self.writer
        number = trial["spec"]["number"]
        if number >= len(exp.engine.trials):
            return
        # The watch delivers these versions again: they are known, not news.
        writer.ours.trial_versions[number].append(trial["metadata"]["resourceVersion"])
        kept = self.history.compact(self.history.trials[number])
        expected = writer.trial_status(exp.engine.trials[number], kept)
        writer.ours.written_status[number] = store.json_digest(expected)
        if not store.same_json(trial.get("status") or {}, expected):
            writer.dirty_trials.add(number)
            writer.ours.foreign_trial_status[number] = trial.get("status")
            if not legacy:
                await ownership.status_restored(exp, f"HPOTrial {trial['metadata']['name']}")

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
