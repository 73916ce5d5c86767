"""What the trial pods tell: an attempt that ended (its outcome fed to the engine), the
node a pod runs on, and `name=value` metric lines in the log of a script without the
SDK (followed until the attempt ends, or until it reports through the SDK)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubetune.events import ExitKind
from kubetune.names import LABEL_ATTEMPT, LABEL_TRIAL
from kubetune.operator import ownership
from kubetune.operator.actions import PodActions, relaunch
from kubetune.operator.experiment import Experiment
from kubetune.operator.gang import attempt_pod_names, gang_at_start, pod_rank, rank_ended
from kubetune.operator.gangshell import delete_ranks, delete_ranks_later
from kubetune.operator.logs import LogStreams
from kubetune.operator.notices import NodeNotices
from kubetune.operator.outcomes import attempt_outcome, pod_node
from kubetune.operator.writes import REPORT_WRITE_SECONDS, StatusWriter
from kubetune.shell.core import LogReport, take_log_report

# A trial that reports through the SDK at least this often after an operator restart is
# heard before its log is read (twice the late-write delay).
LOG_FOLLOW_GRACE_SECONDS = 2 * REPORT_WRITE_SECONDS


class PodWatch:
    def __init__(
        self,
        experiment: Experiment,
        writer: StatusWriter,
        actions: PodActions,
        logs: LogStreams | None,
    ) -> None:
        self.experiment = experiment
        self.writer = writer
        self.actions = actions
        self.logs = logs
        # An attempt's log follower; None once it has ended (the key stays: a log is not
        # followed twice, and the done task would keep kopf's cause alive in its context).
        self.followers: dict[tuple[int, int], asyncio.Task[None] | None] = {}
        self.sdk_reporters: set[tuple[int, int]] = set()
        self.notices = NodeNotices()

    def node_changed(self, node: dict[str, Any], deleted: bool) -> None:
        """A Node's termination taint (operator/notices.py): its trials leave at their
        next report."""
        self.notices.node_changed(node, deleted)

    async def reconcile(self) -> None:
        """At load: the pods as they are now against the attempts the engine runs."""
        exp = self.experiment
        # Still listed below: the deletion's watch event ends their attempts.
        await ownership.delete_orphaned_pods(exp)
        workers = exp.spec.workers
        # Only the running attempts' pods are kept of the listing (ended ones stay, many).
        wanted = {
            name
            for trial in exp.engine.running()
            for name in attempt_pod_names(trial.name, trial.attempts[-1].number, workers)
        }
        listed = await exp.kube.list_pods(
            exp.namespace, exp.name, lambda p: p["metadata"]["name"] in wanted
        )
        pods = {p["metadata"]["name"]: p for p in listed}
        for trial in list(exp.engine.running()):
            attempt = trial.attempts[-1]
            found = gang_at_start(pods, trial.name, attempt.number, workers)
            if found == "launch" and workers == 1 and exp.engine.told_to_end(trial.number):
                # Told to pause or stop, and no pod left: it ended while the operator was
                # away (killed before it wrote the end), as it was told.
                message = "no pod left when the operator started"
                exp.engine.attempt_ended(
                    trial.number, attempt.number, ExitKind.INTERRUPTED, None, time.time(), message
                )
                continue
            if found == "launch":
                # The launch was recorded but its pods (some ranks of a gang) never made
                # it: carry the launch out (what exists is not created twice).
                await self.actions.launch_one(relaunch(trial))
                continue
            if found == "interrupt":
                await self._interrupt_broken_gang(trial.number, trial.name, attempt.number)
                continue
            for name in attempt_pod_names(trial.name, attempt.number, workers):
                # An attempt's first SDK report may be written late, status.sdkAttempt
                # with it: a pod found running and not known to report through the SDK
                # is given time to do so before its log is read (from its start).
                self._end_attempt_from_pod(pods[name], False, LOG_FOLLOW_GRACE_SECONDS)

    async def _interrupt_broken_gang(self, number: int, trial: str, attempt: int) -> None:
        """A rank of a running gang vanished while the operator was away: a new rank must
        not join the others, so the attempt ends as an interruption, resumed whole."""
        exp = self.experiment
        message = f"a rank of the gang vanished while the operator was not running ({trial})"
        if exp.engine.attempt_ended(
            number, attempt, ExitKind.INTERRUPTED, None, time.time(), message
        ):
            await delete_ranks(exp, trial, attempt)

    def sdk_reported(self, number: int, attempt: int) -> None:
        """The attempt reports through the SDK: its log is just output from now on (and
        after a restart: status.sdkAttempt, written with the trial's next write)."""
        key = (number, attempt)
        if key not in self.sdk_reporters:
            self.sdk_reporters.add(key)
            if attempt > self.writer.sdk_attempts.get(number, -1):
                self.writer.sdk_attempts[number] = attempt
            follower = self.followers.pop(key, None)
            if follower is not None:
                follower.cancel()

    def restore_sdk_attempt(self, number: int, status: dict[str, Any]) -> None:
        """At load: the stored status.sdkAttempt (what was written is written again)."""
        attempt = status.get("sdkAttempt")
        if isinstance(attempt, int) and not isinstance(attempt, bool):
            self.writer.sdk_attempts[number] = attempt
            self.sdk_reporters.add((number, attempt))

    async def pod_changed(self, pod: dict[str, Any], deleted: bool) -> None:
        exp = self.experiment
        follower = self.followers.get(_attempt_key(pod))
        ended = attempt_outcome(pod, deleted) is not None
        if follower is not None and ended and pod_rank(pod) == 0:
            # The log stream may still hold the last metric lines: let it deliver them
            # before the attempt is recorded as ended.
            await asyncio.wait({follower}, timeout=10)
        if not exp.loaded:
            return
        if attempt_outcome(pod, deleted) is None:
            # Nothing ended: note the node and follow the log; no lock, no write now.
            self._end_attempt_from_pod(pod, deleted)
            return
        # The engine's part has no await (as a report's), so it needs no lock; the step
        # is shared with the ends that arrive meanwhile.
        if self._end_attempt_from_pod(pod, deleted):
            await self.actions.step_soon()

    def _end_attempt_from_pod(
        self, pod: dict[str, Any], deleted: bool, log_wait: float = 0.0
    ) -> bool:
        engine = self.experiment.engine
        labels = pod["metadata"].get("labels", {})
        try:
            trial = engine.trial_by_name(labels.get(LABEL_TRIAL, ""))
            attempt = int(labels.get(LABEL_ATTEMPT, "0"))
        except (KeyError, ValueError, LookupError):
            return False
        node = pod_node(pod)
        rank = pod_rank(pod)  # a gang's rank 0 stands for its trial (its node, its log)
        if node and rank == 0 and self.writer.nodes.get(trial.number) != node:
            self.writer.note_node(trial.number, node)
        outcome = attempt_outcome(pod, deleted)
        self.notices.pod_seen(
            pod["metadata"]["name"], trial.number, attempt, node, gone=outcome is not None
        )
        workers = self.experiment.spec.workers
        if workers > 1:
            self.actions.partial.pod_seen(
                trial.number, attempt, rank, workers, bool(node), outcome is not None, time.time()
            )
        if outcome is None:
            if rank == 0:
                self._follow_logs(pod, trial.number, attempt, log_wait)
            return False
        outcome = self.notices.outcome(trial.number, attempt, node, outcome)
        verdict = rank_ended(rank, workers, outcome)
        if verdict.outcome is None:
            return False  # a rank > 0 done: rank 0 speaks for the attempt
        outcome = verdict.outcome
        ended = engine.attempt_ended(
            trial.number, attempt, outcome.kind, outcome.exit_code, time.time(), outcome.message
        )
        if ended and verdict.stop:
            self._stop_ranks(trial.name, attempt, verdict.stop, verdict.graceful)
        return ended

    def _stop_ranks(self, trial: str, attempt: int, ranks: tuple[int, ...], later: bool) -> None:
        exp = self.experiment
        if later:
            delete_ranks_later(exp, trial, attempt, ranks)
            return
        task = asyncio.create_task(delete_ranks(exp, trial, attempt, ranks))
        exp.background.add(task)
        task.add_done_callback(exp.background.discard)

    def _follow_logs(self, pod: dict[str, Any], number: int, attempt: int, wait: float) -> None:
        """Read the pod's log for `name=value` lines after `wait` seconds, unless the
        attempt reports through the SDK first."""
        exp = self.experiment
        key = (number, attempt)
        phase = (pod.get("status") or {}).get("phase")
        if self.logs is None or phase != "Running" or key in self.followers:
            return
        if key in self.sdk_reporters:
            return
        container = pod["spec"]["containers"][0]["name"]

        async def on_line(step: int, metrics: dict[str, float]) -> bool:
            return await self._log_report(number, attempt, step, metrics)

        async def follow(logs: LogStreams, wait: float) -> None:
            await asyncio.sleep(wait)  # cancelled by the attempt's first SDK report
            name, resource = pod["metadata"]["name"], exp.spec.scheduler.resource
            await logs.follow(exp.namespace, name, container, resource, on_line)

        follower = asyncio.create_task(follow(self.logs, wait))
        self.followers[key] = follower
        follower.add_done_callback(lambda _: self._followed(key))

    def _followed(self, key: tuple[int, int]) -> None:
        if key in self.followers:
            self.followers[key] = None

    async def _log_report(
        self, number: int, attempt: int, step: int, metrics: dict[str, float]
    ) -> bool:
        """A `name=value` line from a trial's log; False once the pod is being stopped."""
        exp = self.experiment
        async with exp.lock:
            taken = take_log_report(
                exp.engine, self.sdk_reporters, number, attempt, step, metrics, time.time()
            )
            if taken is LogReport.SDK or taken is LogReport.REFUSED:
                return False  # nothing more to read from this log
            await self.writer.persist()
            if taken is LogReport.CONTINUE:
                return True
            # A script without the SDK cannot hear a pause or a stop: its pod is stopped.
            await delete_ranks(exp, exp.engine.trials[number].name, attempt)
            return False


def _attempt_key(pod: dict[str, Any]) -> tuple[int, int]:
    labels = pod["metadata"].get("labels", {})
    trial = labels.get(LABEL_TRIAL, "")
    number = trial.rpartition("-")[2]
    attempt = labels.get(LABEL_ATTEMPT, "")
    if not (number.isdigit() and attempt.isdigit()):
        return (-1, -1)
    return int(number), int(attempt)
