"""Launches carried out in the background, once written ahead.

A step holds the experiment's lock through its decisions' writes, not through the
Secret and pod creations that follow: at 200 running trials, steps waiting on each
other's creations made a freed slot wait seconds for its next pod. Each launch runs in a
task of its own (`Experiment.launches` holds what it has done): one the API server fails
(a 5xx, a time-out) is tried again with back-off while its attempt is current. Any
deletion of an attempt's pods withdraws its launch first and waits until it creates
nothing more (`Experiment.settle_launch`), so pods are deleted after they exist, not
before; a stopped attempt with no pod known to exist is ended here, since no pod's end
will end it; a gang whose later ranks fail to be created is interrupted, not completed
late (ranks must start together).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from kubetune.engine import LaunchTrial
from kubetune.events import ExitKind
from kubetune.httpserver import OneLineLog
from kubetune.operator.experiment import Experiment, Launch
from kubetune.operator.gangshell import brief, stop_ranks
from kubetune.trials import TrialPhase

logger = logging.getLogger(__name__)
LAUNCH_LOG = OneLineLog(logger, burst=10)
LAUNCH_RETRY_SECONDS = (1, 2, 5, 10, 30, 60)  # then every 60 s
STOPPED_BEFORE_POD = "stopped before its pod was created"


class BackgroundLaunches:
    def __init__(
        self,
        experiment: Experiment,
        launch_one: Callable[[LaunchTrial], Awaitable[None]],
        end_attempt: Callable[[LaunchTrial, str], None],
        after: Callable[[], None],
    ) -> None:
        """`launch_one` creates an attempt's objects (raising on a transient failure);
        `end_attempt` ends an attempt that has no pod (with why); `after` is called when
        a launch is over (its refusals to act on)."""
        self.experiment = experiment
        self.launch_one = launch_one
        self.end_attempt = end_attempt
        self.after = after

    def start(self, action: LaunchTrial) -> None:
        exp = self.experiment
        key = (action.name, action.attempt)
        if key not in exp.launches:  # else it is under way (a quota retry of it)
            exp.launches[key] = Launch()
            exp.in_background(self._carry_out(action, exp.launches[key]))

    async def _carry_out(self, action: LaunchTrial, launch: Launch) -> None:
        exp = self.experiment
        try:
            for failures in itertools.count():
                if exp.closed or launch.withdrawn.is_set() or not self.current(action):
                    break
                try:
                    await self.launch_one(action)
                    break
                except Exception as error:  # a 5xx, a time-out
                    exp.observer.reconcile_error("launch", error)
                    if launch.tried_pods and exp.spec.workers > 1:
                        self._interrupt_gang(action, brief(error))
                        break
                    pause = LAUNCH_RETRY_SECONDS[min(failures, len(LAUNCH_RETRY_SECONDS) - 1)]
                    LAUNCH_LOG.warning(
                        "%s/%s: launching %s failed (%s); again in %d s",
                        exp.namespace,
                        exp.name,
                        action.name,
                        brief(error),
                        pause,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(launch.withdrawn.wait(), pause)
        finally:
            del exp.launches[(action.name, action.attempt)]
            launch.done.set()
        if not launch.pods and self.current(action) and action.number in exp.engine.stop_reasons:
            # Stopped before a pod of it was known to exist, and not waiting for quota
            # (a stopped trial's wait is not recorded): no pod's end will end it (one
            # created unbeknownst, its create timed out, is deleted by the stop).
            self.end_attempt(action, STOPPED_BEFORE_POD)
        self.after()

    def _interrupt_gang(self, action: LaunchTrial, why: str) -> None:
        """Ranks created later than the others would not start with them: the attempt
        is interrupted (resumed whole later), the ranks created are deleted (retried, in
        the background, once this launch is over) and a step is asked for."""
        exp = self.experiment
        message = f"creating its gang's pods failed ({why})"
        if exp.engine.attempt_ended(
            action.number, action.attempt, ExitKind.INTERRUPTED, None, time.time(), message
        ):
            stop_ranks(exp, action.name, action.attempt)
            self.end_attempt(action, message)  # ended already: it only asks for a step

    def withdrawn(self, action: LaunchTrial) -> bool:
        """Whether the launch's pods are to be deleted, or its trial is being stopped."""
        exp = self.experiment
        launch = exp.launches.get((action.name, action.attempt))
        return (launch is not None and launch.withdrawn.is_set()) or (
            action.number in exp.engine.stop_reasons
        )

    def current(self, action: LaunchTrial) -> bool:
        """Whether the launch is still wanted: its attempt the trial's running one."""
        trial = self.experiment.engine.trials[action.number]
        attempt = trial.attempt
        return (
            trial.phase is TrialPhase.RUNNING
            and attempt is not None
            and (attempt.number == action.attempt)
        )
