"""The engine's actions carried out with pods: the operator's `ActionPort`
(kubetune.shell.core). A launch creates the attempt's pod (placed by the capacity loop)
and, the first time its token block is needed, the block's Secret; a pod the API
server refuses ends its attempt (or, refused for an exceeded quota, waits and is
created again with back-off); a stop deletes the pod.
`step_locked` is the loop that drives it: decide, write ahead, carry out, until no
refused pod frees a slot. Launches are carried out in the background, once written
ahead (operator/launching.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from kubernetes.client.rest import ApiException

from kubetune.engine import FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.events import ExitKind
from kubetune.offloop import SuggestionWorker
from kubetune.operator import ownership
from kubetune.operator.coalesce import CoalescedWriter
from kubetune.operator.experiment import Experiment
from kubetune.operator.gang import PARTIAL_GANG_SECONDS, PartialGangs, rank_pods, trial_service
from kubetune.operator.gangshell import delete_ranks, stop_ranks
from kubetune.operator.launching import STOPPED_BEFORE_POD, BackgroundLaunches
from kubetune.operator.outcomes import Refusal, api_message, namespace_terminating, refusal
from kubetune.operator.pods import owned_by, trial_pod
from kubetune.operator.quota import QUOTA_RETRY_SECONDS, QuotaWaits
from kubetune.operator.writes import StatusWriter
from kubetune.schedulers import pbt
from kubetune.shell.core import attempt_context, decide
from kubetune.trials import TrialPhase, TrialRecord

logger = logging.getLogger(__name__)

STOPPED_WAITING = "stopped while waiting for quota"


class PodActions:
    def __init__(
        self, experiment: Experiment, writer: StatusWriter, sampler: SuggestionWorker
    ) -> None:
        self.experiment = experiment
        self.writer = writer
        self.sampler = sampler
        self.sampling: asyncio.Task[None] | None = None
        self.refused: list[tuple[LaunchTrial, str]] = []
        self.quota_waits = QuotaWaits()
        self.partial = PartialGangs()  # fed by the pod watch
        self.stepper = CoalescedWriter(self._step)
        self.launches = BackgroundLaunches(
            experiment, self.launch_one, self._end_without_pod, self._after_launch
        )

    async def step_soon(self) -> None:
        """A step that starts after this call, shared by everyone who asks for one while
        it waits for the lock: 200 trials ending at one rung are one or two steps, not 200
        in a queue (a slot freed waited seconds for its turn)."""
        await self.stepper.flush()

    async def _step(self) -> None:
        async with self.experiment.lock:
            await self.step_locked()

    async def step_locked(self) -> None:
        """Decide and carry out until nothing changes (the caller holds the lock)."""
        exp = self.experiment
        if not exp.loaded or exp.closed:
            return
        await self._release_partial_gangs()
        # Refused pods end their attempts, which frees slots: decide again until none is.
        for _ in range(1 + exp.spec.budget.maxTrials):
            again = await self._end_refused_attempts()
            await decide(exp.engine, self, time.time())  # written ahead, then carried out
            if not (again or self.refused):
                break

    # ----- kubetune.shell.core.ActionPort ------------------------------------------

    async def persist(self) -> bool:
        await self.writer.persist()  # a failed write raises: nothing is carried out
        return True

    async def launch(self, actions: Sequence[LaunchTrial]) -> None:
        # Their API calls go out together, with the pods waiting for quota.
        for action in [*actions, *self._quota_retries()]:
            self.launches.start(action)

    def _end_without_pod(self, action: LaunchTrial, message: str) -> None:
        self.refused.append((action, message))

    def _after_launch(self) -> None:
        """A launch is over: a step for the attempts refused pods ended (a failure is
        counted and logged; the next resync steps again)."""
        exp = self.experiment
        if not self.refused or exp.closed:
            return

        async def step() -> None:
            try:
                await self.step_soon()
            except Exception as error:
                exp.observer.reconcile_error("launch", error)
                logger.warning("%s: a step after launches failed: %s", exp.name, error)

        exp.in_background(step())

    async def stop(self, action: StopTrial) -> None:
        exp = self.experiment
        trial = exp.engine.trials[action.number]
        if self.quota_waits.pop(action.number, action.attempt) is not None:
            # Its pod never existed: the attempt ends here.
            self.refused.append((relaunch(trial), STOPPED_WAITING))
        # Every rank of a gang, not awaited (after its launch, if one is under way).
        stop_ranks(exp, trial.name, action.attempt)
        await exp.event(f"Trial {trial.name} stopped: {action.reason}", "TrialStopped")

    def sample(self, action: SampleTrial) -> None:
        if self.sampling is None or self.sampling.done():
            self.sampling = asyncio.create_task(self._sample())

    async def finish(self, action: FinishExperiment) -> None:
        ok = action.succeeded
        await self.experiment.event(
            f"{action.reason}: {action.message}",
            f"Experiment{'Succeeded' if ok else 'Failed'}",
            not ok,
        )

    # ----- pods ---------------------------------------------------------------------

    async def launch_one(self, action: LaunchTrial) -> None:
        exp, writer = self.experiment, self.writer
        if action.number not in writer.trial_uids:
            await writer.flush_trial(action.number)  # its HPOTrial is being put back
        if action.number in writer.name_taken:
            self.refused.append((action, writer.name_taken[action.number]))
            return
        uid = writer.trial_uids.get(action.number)
        if uid is None:
            return  # the experiment is gone
        capacity = exp.config.capacity
        if capacity is not None:  # a gang is created whole or waits whole
            why = capacity.admit_gang(exp.spec, exp.namespace, action.name, action.attempt)
            if why is not None:
                await self._wait_for_room(action, why)
                return
        base = exp.checkpoint_base()
        context = attempt_context(action, exp.name, exp.endpoint, exp.tokens, base)
        placement = capacity.placement_for(exp.spec) if capacity is not None else None
        pod = trial_pod(exp.spec, exp.namespace, context, uid, None, placement)
        bodies: list[tuple[dict, set[str]]] = []
        if exp.spec.workers > 1:  # a gang: its pods' DNS names (operator/gang.py)
            service = trial_service(exp.namespace, exp.name, action.name, uid, exp.uid)
            bodies.append((service, {uid, exp.uid}))
        # Deterministic names: a launch carried out again creates nothing twice.
        bodies += [(p, {uid}) for p in rank_pods(pod, exp.spec.workers)]
        launch = exp.launches.get((action.name, action.attempt))  # None: a reconcile's
        try:
            await exp.token_secrets.ensure(action.name, uid)
            for body, owners in bodies:
                if launch is not None and launch.withdrawn.is_set():
                    return  # its pods are being deleted: nothing more is created
                counted = launch if body["kind"] == "Pod" else None
                if counted is not None:
                    counted.tried_pods += 1
                existing = await exp.kube.create(body)
                if counted is not None:
                    counted.pods += 1
                if existing is not None and not owned_by(existing, owners):
                    kind, name = body["kind"], body["metadata"]["name"]
                    await self._drop_partial_gang(action)
                    self.refused.append((action, await ownership.name_taken(exp, kind, name)))
                    return
        except ApiException as error:
            if namespace_terminating(error.status, error.body):
                exp.close_with_namespace()
                return
            message = api_message(error.body, str(error.reason or ""))
            kind = refusal(error.status, message)
            if kind is None:
                raise  # transient: the next reconcile creates it
            await self._drop_partial_gang(action)
            if kind is Refusal.QUOTA:
                await self._wait_for_quota(action, message)
            else:
                self.quota_waits.pop(action.number, action.attempt)
                self.refused.append((action, message))
            return
        self.quota_waits.pop(action.number, action.attempt)
        how = f"resumed (attempt {action.attempt})" if action.resume else "started"
        await exp.event(f"Trial {action.name} {how}", "TrialStarted")

    async def _release_partial_gangs(self) -> None:
        """Gangs placed in part for too long (operator/gang.py `PartialGangs`): their
        placed ranks must not hold nodes for ever; the attempt is an interruption."""
        exp, now = self.experiment, time.time()
        for number, attempt, waiting in self.partial.overdue(now, PARTIAL_GANG_SECONDS):
            self.partial.forget(number, attempt)
            trial = exp.engine.trials[number]
            why = (
                f"rank(s) {', '.join(map(str, waiting))} of its gang of {exp.spec.workers} found "
                f"no node within {PARTIAL_GANG_SECONDS:.0f} s while the others held theirs"
            )
            if exp.engine.attempt_ended(number, attempt, ExitKind.INTERRUPTED, None, now, why):
                await delete_ranks(exp, trial.name, attempt)
                await exp.event(
                    f"Trial {trial.name}: {why}: every rank released, it resumes later",
                    "GangReleased",
                    True,
                )

    async def _drop_partial_gang(self, action: LaunchTrial) -> None:
        """A rank refused: the ranks created already must not hold their nodes."""
        if self.experiment.spec.workers > 1:
            await delete_ranks(self.experiment, action.name, action.attempt, settle=False)

    async def _end_refused_attempts(self) -> bool:
        """End the attempts whose pods the API server refused; True if any ended."""
        refused, self.refused = self.refused, []
        ended = False
        for action, message in refused:
            if self.experiment.engine.attempt_ended(
                action.number, action.attempt, ExitKind.REFUSED, None, time.time(), message
            ):
                ended = True
                if message not in (STOPPED_WAITING, STOPPED_BEFORE_POD):
                    await self.experiment.event(
                        f"Trial {action.name}: the API server refused its pod: {message}",
                        "TrialPodRefused",
                        True,
                    )
        return ended

    def _quota_retries(self) -> list[LaunchTrial]:
        """Launches refused for an exceeded quota whose back-off is over."""
        return self.quota_waits.due(self.experiment.engine, time.time())

    async def _wait_for_room(self, action: LaunchTrial, why: str) -> None:
        if self.launches.withdrawn(action):
            return
        self.quota_waits.refused(action, time.time(), QUOTA_RETRY_SECONDS)
        if self.quota_waits.waits[action.number].refusals == 1:  # told once per wait
            workers = self.experiment.spec.workers
            await self.experiment.event(
                f"Trial {action.name} (a gang of {workers} pods) waits: {why}",
                "TrialWaitingForNodes",
            )

    async def _wait_for_quota(self, action: LaunchTrial, message: str) -> None:
        if self.launches.withdrawn(action):
            return  # stopped meanwhile: it ends as stopped, not waiting
        delay = self.quota_waits.refused(action, time.time())
        await self.experiment.event(
            f"Trial {action.name} waits for quota: {message}; its pod is created again in "
            f"{delay:.0f} s",
            "TrialWaitingForQuota",
            True,
        )

    async def _sample(self) -> None:
        """Every trial waiting for parameters, in one call to the sampler worker."""
        exp = self.experiment
        numbers = [t.number for t in exp.engine.phases.members(TrialPhase.SAMPLING)]
        if not numbers:
            return
        spec, trials, attrs, _ = exp.engine.sampler_request(numbers[0])
        try:
            suggestions = await self.sampler.suggest_many((spec, trials, attrs, numbers))
        except Exception as error:
            exp.observer.reconcile_error("sampling", error)
            logger.exception("sampling trials %s of %s/%s failed", numbers, exp.namespace, exp.name)
            return
        try:
            # No await in between: the engine's part needs no lock (as a report's).
            for number, suggestion in zip(numbers, suggestions, strict=True):
                exp.engine.record_suggestion(number, suggestion)
            await self.step_soon()
        except Exception as error:
            # A task of its own: raised, it was "never retrieved" and logged by asyncio
            # alone. The trials are carried out by the next reconcile (resync.py).
            exp.observer.reconcile_error("sampling", error)
            logger.exception("launching sampled trials of %s/%s failed", exp.namespace, exp.name)


def relaunch(trial: TrialRecord) -> LaunchTrial:
    """The launch of the trial's last attempt, to carry out again."""
    attempt = trial.attempts[-1]
    parent, from_step = pbt.launch_lineage(trial)  # a PBT member's pinned start
    return LaunchTrial(
        trial.number,
        trial.name,
        attempt.number,
        trial.params,
        attempt.resume,
        attempt.target,
        parent,
        from_step,
    )
