"""One experiment on the cluster: its engine, and the objects that carry its decisions out.

Level-triggered and idempotent, in controller-runtime's manner: `step()` may run at any
time, any number of times. Everything that changes the engine (a report, a pod that
ended, a suggestion) happens under the experiment's lock and is written to the
experiment's custom resources before anything acts on it, so an operator killed at any
moment and started again rebuilds the same engine from the API server (`load`) and
goes on: no trial is duplicated, no reported value is lost.

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
  `HistoryRecordsMissing`, metric `kubetune_history_records_missing_total`).
* An HPOTrial or pod found under the operator's name that it does not own is left as it
  is and fails its trial (Event `TrialObjectNameTaken`); a trial pod that lost its owner
  (HPOTrial deleted with `--cascade=orphan`) is deleted (Event `OrphanedPodDeleted`).
* A pod the API server refuses (a 4xx: invalid, forbidden by Pod Security) fails its
  trial with the API's message as the reason (Event `TrialPodRefused`; it counts toward
  `maxFailedTrials`); a pod refused for an exceeded quota waits and is created again
  with back-off (Event `TrialWaitingForQuota`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune import observability
from kubetune.conditions import experiment_conditions
from kubetune.engine import (
    Engine,
    FinishExperiment,
    LaunchTrial,
    SampleTrial,
    StopTrial,
)
from kubetune.events import ExitKind, last_launch_version
from kubetune.ingest import Report, ReportTarget
from kubetune.names import (
    LABEL_ATTEMPT,
    LABEL_TRIAL,
    endpoint_for,
    pod_name,
)
from kubetune.offloop import SuggestionWorker
from kubetune.operator import store
from kubetune.operator.coalesce import CoalescedWriter
from kubetune.operator.kube import Kube
from kubetune.operator.logs import LogStreams
from kubetune.operator.outcomes import Refusal, api_message, attempt_outcome, pod_node, refusal
from kubetune.operator.pods import owned_by, token_secret, trial_pod
from kubetune.operator.quota import QuotaWaits
from kubetune.operator.status import (
    experiment_status,
    restoring_patch,
    timestamp,
    trial_object,
    trial_status,
)
from kubetune.placement import PlacementSource
from kubetune.schedulers import make_scheduler
from kubetune.shell.core import (
    LogReport,
    attempt_context,
    decide,
    experiment_phase,
    take_log_report,
)
from kubetune.spec import ExperimentSpec
from kubetune.timestamps import parse_rfc3339
from kubetune.tokens import TokenAuthority, experiment_scope, release_0_scope
from kubetune.trialenv import checkpoint_uri
from kubetune.trials import TrialPhase, TrialRecord, Verdict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    endpoint_url: str
    token_key: bytes
    pod_grace_seconds: int = 30
    # Where trials checkpoint when their experiment names no `spec.checkpoints`.
    default_checkpoint_uri: str | None = None
    # The capacity loop (kubetune.capacity.manager.CapacityManager): node pool placement.
    capacity: PlacementSource | None = None


HISTORY_UNREADABLE = "HistoryUnreadable"


class ExperimentController:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        sampler: SuggestionWorker,
        body: dict[str, Any],
        spec: ExperimentSpec,
        logs: LogStreams | None = None,
    ) -> None:
        metadata = body["metadata"]
        self.kube = kube
        self.config = config
        self.sampler = sampler
        self.logs = logs
        self.followers: dict[tuple[int, int], asyncio.Task[None]] = {}
        self.sdk_reporters: set[tuple[int, int]] = set()
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.uid: str = metadata["uid"]
        self.generation: int = metadata.get("generation", 1)
        self.body = body
        self.spec = spec
        # The UID: a recreated experiment of the same name does not take the old tokens.
        self.tokens = TokenAuthority(
            config.token_key, experiment_scope(self.namespace, self.name, self.uid)
        )
        self.endpoint = endpoint_for(config.endpoint_url, self.namespace, self.name)
        self.lock = asyncio.Lock()
        self.engine = Engine(spec, self.name)
        self.seqs: list[int] = []
        self.next_seq = 0
        self.trial_history: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.experiment_history: list[dict[str, Any]] = []
        self.trial_uids: dict[int, str] = {}
        self.nodes: dict[int, str] = {}
        self.dirty_trials: set[int] = set()
        self.written_phases: dict[int, tuple[str, str]] = {}
        self.sampling: asyncio.Task[None] | None = None
        self.background: set[asyncio.Task[Any]] = set()
        self.flush: asyncio.Task[None] | None = None
        self.lazy_trials: set[int] = set()
        self.writers: dict[int, CoalescedWriter] = {}
        self.written_experiment_history = 0
        self.last_status: dict[str, Any] | None = None
        self.loaded = False
        self.closed = False  # the experiment is gone: nothing more is written
        self.load_failure: str | None = None
        self.signer = store.HistorySigner(
            config.token_key, experiment_scope(self.namespace, self.name, self.uid)
        )
        # What we wrote, to tell our writes (their resourceVersions) from anyone else's.
        self.written_status: dict[int, dict[str, Any]] = {}
        self.writing_status: dict[int, dict[str, Any]] = {}
        self.trial_versions: dict[int, deque[str]] = defaultdict(lambda: deque(maxlen=8))
        self.experiment_versions: deque[str] = deque(maxlen=8)
        self.experiment_versions.append(metadata.get("resourceVersion", ""))
        self.writing_experiment: dict[str, Any] | None = None
        # Statuses last seen written by someone else: our next write of each clears the
        # keys they added (`restoring_patch`). The experiment's stored status counts as
        # such until the first write after a load.
        self.foreign_trial_status: dict[int, Any] = {}
        self.foreign_experiment_status: Any = body.get("status")
        self.refused: list[tuple[LaunchTrial, str]] = []
        # Trials whose HPOTrial name someone else's object holds: they fail at launch.
        self.name_taken: dict[int, str] = {}
        self.quota_waits = QuotaWaits()
        # Written by the capacity loop (capacity_update); the stored cost seeds it, and
        # the time it was accounted up to tells a restarted loop what it has not seen.
        stored = body.get("status") or {}
        self.cost_usd: float | None = stored.get("costUSD")
        self.cost_at: float | None = parse_rfc3339(stored.get("costAccountedAt"))
        self.capacity_conditions: list[dict[str, Any]] = []

    # ----- rebuilding ---------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the engine from the custom resources, then reconcile with the pods.

        Never raises on what it finds: foreign objects and records are left out (with an
        Event), lost plans are made again, and a history that still cannot be replayed
        fails the experiment with a condition saying why."""
        async with self.lock:
            listed = await self.kube.list_trials(self.namespace, self.name)
            trials = [t for t in listed if self._is_ours(t)]
            for foreign in (t for t in listed if not self._is_ours(t)):
                name = foreign["metadata"]["name"]
                await self._event(
                    f"HPOTrial {name} is not one of this experiment's trials: ignored",
                    "ForeignTrialIgnored",
                    True,
                )
            stored = [(self.body.get("status") or {}).get("history") or []]
            stored += [(t.get("status") or {}).get("history") or [] for t in trials]
            checked = store.check_histories(stored, self.signer)
            owners = ["the experiment"] + [t["metadata"]["name"] for t in trials]
            if sum(checked.refused) and not any(checked.histories):
                # Every record refused (MACs stripped, say): starting the search over
                # would reuse the names of the trials that are there.
                await self._report_refused(owners, checked.refused)
                await self._fail_to_load(ValueError("every history record was refused"))
                return
            try:
                merged = store.merge_histories(checked.histories)
                events, made = store.repair(merged, make_scheduler(self.spec, None))
                engine = Engine.replay(self.spec, self.name, (event for _, event in events))
            except Exception as error:
                await self._fail_to_load(error)
                return
            self.engine = engine
            self.seqs = [seq for seq, _ in events]
            self.next_seq = max(self.seqs) + 1 if self.seqs else 0
            self.experiment_history = checked.histories[0]
            for trial, history in zip(trials, checked.histories[1:], strict=True):
                number = trial["spec"]["number"]
                self.trial_uids[number] = trial["metadata"]["uid"]
                self.trial_history[number] = history
                node = (trial.get("status") or {}).get("node")
                if node:
                    self.nodes[number] = node
            # Pods launched by kubetune v0.1.0 hold tokens of its scope (no UID): they
            # keep reporting after an upgrade (their launch records are version 0).
            self.tokens.accept_release_0(
                release_0_scope(self.namespace, self.name),
                (
                    self.engine.trial_name(number)
                    for number, history in self.trial_history.items()
                    if last_launch_version(history) == 0
                ),
            )
            await self._report_refused(owners, checked.refused)
            await self._report_missing(stored, bool(made))  # refused ones are told above
            for seq, plan in made:
                self.trial_history[plan.number].append(self.signer.sign(store.encode(seq, plan)))
                self.dirty_trials.add(plan.number)
                await self._event(
                    f"Trial {self.engine.trial_name(plan.number)} lost its history (its "
                    f"HPOTrial was deleted while the operator was down): it runs again",
                    "TrialReplanned",
                    True,
                )
            for trial in trials:  # put back what anyone else wrote
                number = trial["spec"]["number"]
                if number >= len(self.engine.trials):
                    continue
                # The watch delivers these versions again: they are known, not news.
                self.trial_versions[number].append(trial["metadata"]["resourceVersion"])
                kept = self._compact(self.trial_history[number])
                expected = self._trial_status(self.engine.trials[number], kept)
                self.written_status[number] = expected
                if store.canonical(trial.get("status") or {}) != store.canonical(expected):
                    self.dirty_trials.add(number)
                    self.foreign_trial_status[number] = trial.get("status")
                    if not checked.legacy:
                        await self._status_restored(f"HPOTrial {trial['metadata']['name']}")
            if self.engine.reopen(time.time()):
                self._note_new_events()
            await self._reconcile_pods()
            await self._persist()
            self.loaded = True
            logger.info(
                "experiment %s/%s rebuilt from %d events", self.namespace, self.name, len(events)
            )

    def _is_ours(self, trial: dict[str, Any]) -> bool:
        """An HPOTrial this experiment's controller made: its name is the one its number
        gives, and the experiment controls it."""
        number = (trial.get("spec") or {}).get("number")
        metadata = trial.get("metadata") or {}
        controlled = any(
            ref.get("uid") == self.uid and ref.get("controller")
            for ref in metadata.get("ownerReferences") or []
        )
        return (
            isinstance(number, int)
            and not isinstance(number, bool)
            and number >= 0
            and metadata.get("name") == self.engine.trial_name(number)
            and controlled
        )

    async def _report_refused(self, owners: list[str], refused: list[int]) -> None:
        total = sum(refused)
        if not total:
            return
        observability.history_records_refused(self.namespace, self.name, total)
        where = ", ".join(f"{n} of {owner}" for owner, n in zip(owners, refused, strict=True) if n)
        message = (
            f"{total} history records without a valid MAC refused ({where}): written by "
            f"someone other than the operator, not replayed"
        )
        logger.warning("experiment %s/%s: %s", self.namespace, self.name, message)
        await self._event(message, "HistoryRecordRefused", True)
        self.dirty_trials.update(self.trial_history)  # written again without them

    async def _report_missing(self, histories: Sequence[Sequence[Any]], lost: bool) -> None:
        """Signed records deleted from a history (not a whole HPOTrial: `lost`, its
        plan made again) are told: Event `HistoryRecordsMissing` and a metric. What is
        left replayed (it did, or loading failed already); it may lack reports."""
        missing = [] if lost else store.missing_records(histories)
        if not missing:
            return
        observability.history_records_missing(self.namespace, self.name, len(missing))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        message = (
            f"{len(missing)} history records missing (sequence numbers {shown}): deleted "
            f"by someone other than the operator; the rest is replayed without them"
        )
        logger.warning("experiment %s/%s: %s", self.namespace, self.name, message)
        await self._event(message, "HistoryRecordsMissing", True)

    async def _fail_to_load(self, error: Exception) -> None:
        """The stored history cannot be replayed: the experiment fails, saying why, and
        its pods (which nothing can decide for now) are deleted."""
        message = (
            f"the stored history cannot be replayed ({type(error).__name__}: "
            f"{str(error)[:200]}); an HPOTrial deleted, or records refused?"
        )
        self.load_failure = message
        logger.warning("experiment %s/%s: %s", self.namespace, self.name, message)
        previous = (self.body.get("status") or {}).get("conditions") or []
        now = timestamp(time.time())
        conditions = experiment_conditions(
            "Failed", HISTORY_UNREADABLE, message, self.generation, previous, now
        )
        status = {
            "phase": "Failed",
            "reason": HISTORY_UNREADABLE,
            "message": message,
            "observedGeneration": self.generation,
            "conditions": conditions,
        }
        await self.kube.patch_experiment_status(self.namespace, self.name, status)
        await self._event(message, HISTORY_UNREADABLE, True)
        for pod in await self.kube.list_pods(self.namespace, self.name):
            await self.kube.delete_pod(self.namespace, pod["metadata"]["name"], 0)

    async def _status_restored(self, what: str) -> None:
        observability.object_restored(what.partition(" ")[0], "status")
        message = f"The status of {what} was written by someone other than the operator: put back"
        await self._event(message, "StatusRestored", True)

    async def _delete_orphaned_pods(self, trial_name: str | None = None) -> list[str]:
        """Pods of this experiment's trials that no object owns: their HPOTrial was
        deleted with `--cascade=orphan`, and the one put back (a new UID) does not own
        them, so nothing would delete them, not even the experiment's deletion. The
        operator may not patch pods (rbac.yaml), so it cannot adopt them: they are
        deleted, and the attempt each ran ends as an interruption (resumed). Returns
        their names."""
        names = {t.name for t in self.engine.trials} if trial_name is None else {trial_name}
        deleted = []
        for pod in await self.kube.list_pods(self.namespace, self.name):
            metadata = pod["metadata"]
            if metadata.get("ownerReferences") or metadata.get("deletionTimestamp"):
                continue
            if (metadata.get("labels") or {}).get(LABEL_TRIAL) not in names:
                continue
            await self.kube.delete_pod(
                self.namespace, metadata["name"], self.config.pod_grace_seconds
            )
            deleted.append(metadata["name"])
            await self._event(
                f"Pod {metadata['name']} had no owner (its HPOTrial was deleted with "
                f"--cascade=orphan): deleted, its trial resumes",
                "OrphanedPodDeleted",
                True,
            )
        return deleted

    async def _reconcile_pods(self) -> None:
        # Still listed below: the deletion's watch event ends their attempts.
        await self._delete_orphaned_pods()
        pods = {
            p["metadata"]["name"]: p for p in await self.kube.list_pods(self.namespace, self.name)
        }
        for trial in list(self.engine.running()):
            attempt = trial.attempts[-1]
            pod = pods.get(pod_name(trial.name, attempt.number))
            if pod is None:
                # The launch was recorded but the pod never made it: carry the launch out.
                await self._launch(_relaunch(trial))
                continue
            self._end_attempt_from_pod(pod, deleted=False)

    # ----- the durable write ----------------------------------------------------------

    def _note_new_events(self) -> None:
        """Give events the engine appended a sequence number and file them by owner."""
        for event in self.engine.history[len(self.seqs) :]:
            seq = self.next_seq
            self.next_seq += 1
            self.seqs.append(seq)
            number = store.trial_number_of(event)
            record = self.signer.sign(store.encode(seq, event))
            if number is None:
                self.experiment_history.append(record)
            else:
                self.trial_history[number].append(record)
                self.dirty_trials.add(number)

    async def _persist(self) -> None:
        """Write what changed. Trial histories and experiment-level events are written
        now (decisions wait for them); derived summaries may wait for a flush."""
        self._note_new_events()
        for trial in self.engine.trials:
            # Experiment-level events (the end, say) change trials' phases too.
            if self.written_phases.get(trial.number) != (trial.phase.value, trial.reason):
                self.dirty_trials.add(trial.number)
        ready = []
        for number in sorted(self.dirty_trials):
            if number >= len(self.engine.trials):
                self.dirty_trials.discard(number)  # search exhausted before it was sampled
            elif self.engine.trials[number].phase is not TrialPhase.SAMPLING:
                ready.append(number)  # a sampling trial is written with its parameters
        await asyncio.gather(*(self._writer(n).flush() for n in ready))
        for event in observability.trial_events(self.namespace, self.name, self.engine):
            await self._event(*event)  # pauses, promotions, failures, interruptions
        phase = experiment_phase(self.engine)
        urgent = (
            len(self.experiment_history) != self.written_experiment_history
            or self.last_status is None
            or phase != self.last_status.get("phase")
        )
        if urgent:
            await self._write_experiment_status()
        else:
            self._flush_soon()

    def _writer(self, number: int) -> CoalescedWriter:
        writer = self.writers.get(number)
        if writer is None:
            writer = self.writers[number] = CoalescedWriter(lambda: self._write_trial(number))
        return writer

    async def _write_trial(self, number: int) -> None:
        """Write one trial's status as it is now (only ever through its CoalescedWriter)."""
        if self.closed:
            return
        trial = self.engine.trials[number]
        if number in self.name_taken:
            self.dirty_trials.discard(number)  # nothing of ours to write it in
            self.lazy_trials.discard(number)
            return
        if number not in self.trial_uids and not await self._create_trial(trial):
            return
        history = self._compact(self.trial_history[number])
        self.trial_history[number] = history
        phase = (trial.phase.value, trial.reason)
        written = len(history)
        # A copy: the client serializes in a thread while new events may be appended.
        status = self._trial_status(trial, list(history))
        self.writing_status[number] = status
        patch = restoring_patch(self.foreign_trial_status.get(number), status)
        try:
            version = await self.kube.patch_trial_status(self.namespace, trial.name, patch)
        except ApiException as error:
            if error.status != 404:
                raise
            # Deleted by someone else: put back, with everything the engine holds.
            self.trial_uids.pop(number, None)
            if not await self._create_trial(trial, restored=True):
                return
            version = await self.kube.patch_trial_status(self.namespace, trial.name, status)
        self.trial_versions[number].append(version)
        self.written_status[number] = status
        self.foreign_trial_status.pop(number, None)
        self.written_phases[number] = phase
        if self.trial_history[number] is history and len(history) == written:
            # Nothing new arrived during the write.
            self.dirty_trials.discard(number)
            self.lazy_trials.discard(number)

    async def _create_trial(self, trial: TrialRecord, restored: bool = False) -> bool:
        """Create the trial's HPOTrial; False (and the controller closes) if the
        experiment itself is gone, so that nothing is created for it any more."""
        if restored:
            current = await self.kube.get_experiment(self.namespace, self.name)
            metadata = (current or {}).get("metadata") or {}
            if metadata.get("uid") != self.uid or metadata.get("deletionTimestamp"):
                self.closed = True
                return False
        created = await self.kube.create_trial(self.namespace, self._trial_object(trial))
        if not owned_by(created, {self.uid}):
            self.name_taken[trial.number] = await self._name_taken("HPOTrial", trial.name)
            return False
        self.trial_uids[trial.number] = created["metadata"]["uid"]
        # Its ADDED event, status still empty, is ours too.
        self.trial_versions[trial.number].append(created["metadata"]["resourceVersion"])
        if restored:
            await self._delete_orphaned_pods(trial.name)
            observability.object_restored("HPOTrial", "deleted")
            await self._event(
                f"HPOTrial {trial.name} was deleted by someone other than the operator: put "
                f"back from the operator's state",
                "TrialRestored",
                True,
            )
        return True

    def _flush_soon(self, delay: float = 1.0) -> None:
        """Write the summaries (counts, best, nodes) within `delay`, once for many changes."""
        if self.flush is not None and not self.flush.done():
            return

        async def flush() -> None:
            await asyncio.sleep(delay)
            async with self.lock:
                await asyncio.gather(*(self._writer(n).flush() for n in sorted(self.lazy_trials)))
                await self._write_experiment_status()

        self.flush = asyncio.create_task(flush())

    def _compact(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return store.compact(history, self.engine.scheduler.must_keep, shrink=self._objective_only)

    def _objective_only(self, record: dict[str, Any]) -> dict[str, Any]:
        """A report with only the objective's value (what replay reads of any report but
        the last), signed again: a history of big reports stays within its bytes."""
        metrics = record.get("metrics") or {}
        objective = self.spec.objective.metric
        kept = {k: v for k, v in metrics.items() if k == objective}
        if kept == metrics:
            return record
        return self.signer.sign({**record, "metrics": kept})

    def _trial_object(self, trial: TrialRecord) -> dict[str, Any]:
        return trial_object(self.namespace, self.name, self.uid, trial)

    def _checkpoint_base(self) -> str | None:
        base = self.spec.checkpoints.uri if self.spec.checkpoints else None
        return base or self.config.default_checkpoint_uri

    def _checkpoint_uri(self, trial: str) -> str:
        base = self._checkpoint_base()
        return checkpoint_uri(base, self.name, trial) if base else ""

    def _trial_status(self, trial: TrialRecord, history: list[dict[str, Any]]) -> dict[str, Any]:
        node = self.nodes.get(trial.number)
        return trial_status(trial, history, node, self._checkpoint_uri(trial.name))

    async def _write_experiment_status(self, force: bool = False) -> None:
        if self.closed:
            return
        status = self._experiment_status()
        if status == self.last_status and not force:
            return
        self.writing_experiment = status
        patch = restoring_patch(self.foreign_experiment_status, status)
        version = await self.kube.patch_experiment_status(self.namespace, self.name, patch)
        self.foreign_experiment_status = None
        self.experiment_versions.append(version)
        self.last_status = status
        self.written_experiment_history = len(self.experiment_history)

    def _experiment_status(self) -> dict[str, Any]:
        return experiment_status(
            self.engine,
            self.spec,
            self.generation,
            (self.cost_usd, self.cost_at),
            self.experiment_history,
            (self.last_status or {}).get("conditions", []),
            self.capacity_conditions,
            time.time(),
        )

    # ----- what happens -------------------------------------------------------------

    async def step(self) -> None:
        async with self.lock:
            await self._step_locked()

    async def _step_locked(self) -> None:
        if not self.loaded or self.closed:
            return
        # Refused pods end their attempts, which frees slots: decide again until none is.
        for _ in range(1 + self.spec.budget.maxTrials):
            again = await self._end_refused_attempts()
            await decide(self.engine, self, time.time())  # written ahead, then carried out
            if not (again or self.refused):
                break

    # ----- the engine's actions: pods (kubetune.shell.core.ActionPort) ---------------

    async def persist(self) -> bool:
        await self._persist()  # a failed write raises: nothing is carried out
        return True

    async def launch(self, actions: Sequence[LaunchTrial]) -> None:
        # Their API calls go out together, with the pods waiting for quota.
        await asyncio.gather(*(self._launch(a) for a in [*actions, *self._quota_retries()]))

    async def stop(self, action: StopTrial) -> None:
        trial = self.engine.trials[action.number]
        if self.quota_waits.pop(action.number) is not None:
            # Its pod never existed: the attempt ends here.
            message = "stopped while waiting for quota"
            self.refused.append((_relaunch(trial), message))
        await self.kube.delete_pod(
            self.namespace, pod_name(trial.name, action.attempt), self.config.pod_grace_seconds
        )
        await self._event(f"Trial {trial.name} stopped: {action.reason}", "TrialStopped")

    def sample(self, action: SampleTrial) -> None:
        if self.sampling is None or self.sampling.done():
            self.sampling = asyncio.create_task(self._sample())

    async def finish(self, action: FinishExperiment) -> None:
        ok = action.succeeded
        await self._event(
            f"{action.reason}: {action.message}",
            f"Experiment{'Succeeded' if ok else 'Failed'}",
            not ok,
        )

    async def _end_refused_attempts(self) -> bool:
        """End the attempts whose pods the API server refused; True if any ended."""
        refused, self.refused = self.refused, []
        ended = False
        for action, message in refused:
            if self.engine.attempt_ended(
                action.number, action.attempt, ExitKind.REFUSED, None, time.time(), message
            ):
                ended = True
                if message != "stopped while waiting for quota":
                    await self._event(
                        f"Trial {action.name}: the API server refused its pod: {message}",
                        "TrialPodRefused",
                        True,
                    )
        return ended

    async def _name_taken(self, kind: str, name: str) -> str:
        """An object the operator would make exists and is not its own: left as it is,
        and its trial fails, saying which object holds the name."""
        message = f"{kind} {name} exists and is not the operator's: the name is taken"
        await self._event(message, "TrialObjectNameTaken", True)
        return message

    def _quota_retries(self) -> list[LaunchTrial]:
        """Launches refused for an exceeded quota whose back-off is over."""
        return self.quota_waits.due(self.engine, time.time())

    async def _wait_for_quota(self, action: LaunchTrial, message: str) -> None:
        delay = self.quota_waits.refused(action, time.time())
        await self._event(
            f"Trial {action.name} waits for quota: {message}; its pod is created again in "
            f"{delay:.0f} s",
            "TrialWaitingForQuota",
            True,
        )

    async def _sample(self) -> None:
        """Every trial waiting for parameters, in one call to the sampler worker."""
        numbers = [t.number for t in self.engine.trials if t.phase is TrialPhase.SAMPLING]
        if not numbers:
            return
        spec, trials, attrs, _ = self.engine.sampler_request(numbers[0])
        try:
            suggestions = await self.sampler.suggest_many((spec, trials, attrs, numbers))
        except Exception as error:
            observability.reconcile_error("sampling", error)
            logger.exception(
                "sampling trials %s of %s/%s failed", numbers, self.namespace, self.name
            )
            return
        async with self.lock:
            for number, suggestion in zip(numbers, suggestions, strict=True):
                self.engine.record_suggestion(number, suggestion)
            await self._step_locked()

    async def _launch(self, action: LaunchTrial) -> None:
        if action.number not in self.trial_uids:
            await self._writer(action.number).flush()  # its HPOTrial is being put back
        if action.number in self.name_taken:
            self.refused.append((action, self.name_taken[action.number]))
            return
        uid = self.trial_uids.get(action.number)
        if uid is None:
            return  # the experiment is gone
        base = self._checkpoint_base()
        context = attempt_context(action, self.name, self.endpoint, self.tokens, base)
        capacity = self.config.capacity
        placement = capacity.placement_for(self.spec) if capacity is not None else None
        secret = token_secret(
            self.namespace, self.name, action.name, uid, context.token, experiment_uid=self.uid
        )
        pod = trial_pod(self.spec, self.namespace, context, uid, None, placement)
        try:
            for body, owners in ((secret, {uid, self.uid}), (pod, {uid})):
                existing = await self.kube.create(body)
                if existing is not None and not owned_by(existing, owners):
                    kind, name = body["kind"], body["metadata"]["name"]
                    self.refused.append((action, await self._name_taken(kind, name)))
                    return
        except ApiException as error:
            message = api_message(error.body, str(error.reason or ""))
            kind = refusal(error.status, message)
            if kind is None:
                raise  # transient: the next reconcile creates it
            if kind is Refusal.QUOTA:
                await self._wait_for_quota(action, message)
            else:
                self.quota_waits.pop(action.number)
                self.refused.append((action, message))
            return
        self.quota_waits.pop(action.number)
        how = f"resumed (attempt {action.attempt})" if action.resume else "started"
        await self._event(f"Trial {action.name} {how}", "TrialStarted")

    async def report(self, report: Report) -> Verdict:
        async with self.lock:
            trial = self.engine.trial_by_name(report.trial)
            verdict = self.engine.report(
                trial.number, report.attempt, report.step, report.metrics, time.time()
            )
            key = (trial.number, report.attempt)
            if key not in self.sdk_reporters:
                self.sdk_reporters.add(key)
                follower = self.followers.pop(key, None)
                if follower is not None:
                    follower.cancel()  # it reports through the SDK: its log is just output
            self._note_new_events()
        # Durable before it is answered, but outside the lock: reports of many trials are
        # written at once, and those of one trial share writes.
        await self._writer(trial.number).flush()
        self._flush_soon()
        return verdict

    async def _log_report(
        self, number: int, attempt: int, step: int, metrics: dict[str, float]
    ) -> bool:
        """A `name=value` line from a trial's log; False once the pod is being stopped."""
        async with self.lock:
            taken = take_log_report(
                self.engine, self.sdk_reporters, number, attempt, step, metrics, time.time()
            )
            if taken is LogReport.SDK or taken is LogReport.REFUSED:
                return False  # nothing more to read from this log
            await self._persist()
            if taken is LogReport.CONTINUE:
                return True
            # A script without the SDK cannot hear a pause or a stop: its pod is stopped.
            trial = self.engine.trials[number]
            await self.kube.delete_pod(
                self.namespace, pod_name(trial.name, attempt), self.config.pod_grace_seconds
            )
            return False

    def _follow_logs(self, pod: dict[str, Any], number: int, attempt: int) -> None:
        key = (number, attempt)
        phase = (pod.get("status") or {}).get("phase")
        if self.logs is None or phase != "Running" or key in self.followers:
            return
        if key in self.sdk_reporters:
            return
        container = pod["spec"]["containers"][0]["name"]

        async def on_line(step: int, metrics: dict[str, float]) -> bool:
            return await self._log_report(number, attempt, step, metrics)

        self.followers[key] = asyncio.create_task(
            self.logs.follow(
                self.namespace,
                pod["metadata"]["name"],
                container,
                self.spec.scheduler.resource,
                on_line,
            )
        )

    async def pod_changed(self, pod: dict[str, Any], deleted: bool) -> None:
        follower = self.followers.get(_attempt_key(pod))
        if follower is not None and attempt_outcome(pod, deleted) is not None:
            # The log stream may still hold the last metric lines: let it deliver them
            # before the attempt is recorded as ended (outside the lock it needs).
            await asyncio.wait({follower}, timeout=10)
        if not self.loaded:
            return
        if attempt_outcome(pod, deleted) is None:
            # Nothing ended: note the node and follow the log; no lock, no write now.
            self._end_attempt_from_pod(pod, deleted)
            return
        async with self.lock:
            if self._end_attempt_from_pod(pod, deleted):
                await self._step_locked()

    def _end_attempt_from_pod(self, pod: dict[str, Any], deleted: bool) -> bool:
        labels = pod["metadata"].get("labels", {})
        try:
            trial = self.engine.trial_by_name(labels.get(LABEL_TRIAL, ""))
            attempt = int(labels.get(LABEL_ATTEMPT, "0"))
        except (KeyError, ValueError, LookupError):
            return False
        node = pod_node(pod)
        if node and self.nodes.get(trial.number) != node:
            self.nodes[trial.number] = node
            self.lazy_trials.add(trial.number)
            self._flush_soon()
        outcome = attempt_outcome(pod, deleted)
        if outcome is None:
            self._follow_logs(pod, trial.number, attempt)
            return False
        return self.engine.attempt_ended(
            trial.number, attempt, outcome.kind, outcome.exit_code, time.time(), outcome.message
        )

    async def spec_changed(self, body: dict[str, Any], spec: ExperimentSpec) -> None:
        """A new generation: only the budget may differ (the CRD refuses other changes)."""
        async with self.lock:
            self.body, self.spec = body, spec
            self.generation = body["metadata"].get("generation", self.generation)
            self.engine.update_spec(spec)
            if self.engine.reopen(time.time()):
                await self._event("Budget raised: the experiment continues", "ExperimentReopened")
            await self._step_locked()

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
                await self._step_locked()  # the budget may refuse work now
            else:
                await self._write_experiment_status()

    async def _event(self, message: str, reason: str, warning: bool = False) -> None:
        # Events are for people: posted in the background, never holding up a decision.
        task = asyncio.create_task(
            self.kube.post_event(self.body, "HPOExperiment", reason, message, warning)
        )
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # ----- objects changed by others ---------------------------------------------------

    async def trial_changed(self, body: dict[str, Any], deleted: bool) -> None:
        """An HPOTrial of this experiment changed: one deleted is put back, a status
        written by anyone else is written again. Our own writes (their resourceVersions)
        and objects that are not ours are left alone."""
        if not self.loaded or self.closed:
            return
        metadata = body.get("metadata") or {}
        number = (body.get("spec") or {}).get("number")
        if not self._is_ours(body) or not isinstance(number, int):
            return
        if number >= len(self.engine.trials):
            return
        if metadata.get("uid") != self.trial_uids.get(number):
            return  # an older object, or one put back already
        if deleted:
            # Written now: the write finds it gone and puts it back (`_write_trial`).
            self.dirty_trials.add(number)
            await self._writer(number).flush()
            return
        if metadata.get("resourceVersion") in self.trial_versions[number]:
            return
        seen = store.canonical(body.get("status") or {})
        ours = (self.written_status.get(number), self.writing_status.get(number))
        if any(s is not None and store.canonical(s) == seen for s in ours):
            return
        await self._status_restored(f"HPOTrial {metadata.get('name')}")
        self.foreign_trial_status[number] = body.get("status")
        self.dirty_trials.add(number)
        await self._writer(number).flush()

    async def experiment_status_seen(self, body: dict[str, Any]) -> None:
        """The experiment changed and its spec did not: a status written by anyone else
        is written again."""
        if not self.loaded or self.closed:
            return
        if (body.get("metadata") or {}).get("resourceVersion") in self.experiment_versions:
            return
        seen = store.canonical(body.get("status") or {})
        ours = (self.last_status, self.writing_experiment)
        if any(s is not None and store.canonical(s) == seen for s in ours):
            return
        async with self.lock:
            await self._status_restored(f"HPOExperiment {self.name}")
            self.foreign_experiment_status = body.get("status")
            await self._write_experiment_status(force=True)

    def close(self) -> None:
        """The experiment was deleted: write nothing more for it."""
        self.closed = True

    def target(self) -> ReportTarget:
        return ReportTarget(self.tokens, self.report, lambda: (t.name for t in self.engine.trials))


def _attempt_key(pod: dict[str, Any]) -> tuple[int, int]:
    labels = pod["metadata"].get("labels", {})
    trial = labels.get(LABEL_TRIAL, "")
    number = trial.rpartition("-")[2]
    attempt = labels.get(LABEL_ATTEMPT, "")
    if not (number.isdigit() and attempt.isdigit()):
        return (-1, -1)
    return int(number), int(attempt)


def _relaunch(trial: TrialRecord) -> LaunchTrial:
    attempt = trial.attempts[-1]
    return LaunchTrial(
        trial.number, trial.name, attempt.number, trial.params, attempt.resume, attempt.target
    )
