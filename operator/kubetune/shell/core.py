"""The loop both shells run: take the engine's actions, persist them, act, feed back.

The local runner (processes and files) and the operator (pods and custom resources)
differ only in their I/O. What they share is here, written once:

* `decide`: the engine's next actions are made durable before any is carried out
  (write ahead), then handed to the shell's `ActionPort`, one method per kind of
  action. A new kind of action (a PBT exploit, a multi-pod gang) is a case in
  `carry_out` and a method on each shell's port; mypy holds every port to it.
* `attempt_context`: what a trial attempt is given, built the same way for both.
* `take_log_report`: a `name=value` log line's report, with one meaning for each
  outcome (`LogReport`); each shell maps it to its I/O.
* `experiment_phase`: Running, Succeeded or Failed, in one place.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from enum import StrEnum
from typing import Protocol

from kubetune.engine import (
    Action,
    Engine,
    EngineError,
    FinishExperiment,
    LaunchTrial,
    SampleTrial,
    StopTrial,
)
from kubetune.trialenv import AttemptContext, checkpoint_uri
from kubetune.trials import Decision


class ActionPort(Protocol):
    """A shell's I/O for the engine's actions."""

    async def persist(self) -> bool:
        """Make the engine's new history durable; False if it could not be (nothing is
        carried out then)."""
        ...

    async def launch(self, actions: Sequence[LaunchTrial]) -> None:
        """Start these attempts (all of one decision: a shell may start them together)."""
        ...

    async def stop(self, action: StopTrial) -> None: ...

    def sample(self, action: SampleTrial) -> None:
        """Ask the sampler for new trials' parameters, unless it is busy already."""
        ...

    async def finish(self, action: FinishExperiment) -> None: ...


async def decide(engine: Engine, port: ActionPort, now: float) -> list[Action]:
    """The engine's next actions, persisted and then carried out; [] if not durable.

    Sampling is asked for before the write: it changes nothing outside, its answer is
    a pure function of the history (asked again, the same), and it is recorded and
    written before the trial it is for launches. A slot freed is refilled a write sooner.
    """
    actions = engine.decide(now)
    for action in actions:
        if isinstance(action, SampleTrial):
            port.sample(action)
    if not await port.persist():
        return []
    await carry_out([a for a in actions if not isinstance(a, SampleTrial)], port)
    return actions


async def carry_out(actions: Sequence[Action], port: ActionPort) -> None:
    # Launches are independent of each other and of the rest: they go out first, together.
    await port.launch([a for a in actions if isinstance(a, LaunchTrial)])
    for action in actions:
        match action:
            case LaunchTrial():
                pass
            case StopTrial():
                await port.stop(action)
            case SampleTrial():
                port.sample(action)
            case FinishExperiment():
                await port.finish(action)


class TokenSource(Protocol):
    def token_for(self, trial: str) -> str: ...


def attempt_context(
    action: LaunchTrial,
    experiment: str,
    endpoint: str,
    tokens: TokenSource,
    checkpoint_base: str | None,
) -> AttemptContext:
    """What an attempt is given; with no checkpoint base it gets no checkpoint URI."""
    where = checkpoint_uri(checkpoint_base, experiment, action.name) if checkpoint_base else ""
    donor = ""
    if checkpoint_base and action.parent is not None and action.from_step is not None:
        donor = checkpoint_uri(checkpoint_base, experiment, action.parent)
    return AttemptContext(
        experiment=experiment,
        trial=action.name,
        attempt=action.attempt,
        params=action.params,
        resume=action.resume,
        endpoint=endpoint,
        token=tokens.token_for(action.name),
        checkpoint_uri=where,
        checkpoint_from=donor,
        checkpoint_from_step=action.from_step if donor else None,
    )


class LogReport(StrEnum):
    """What became of a report read from a trial's log."""

    # The attempt reports through the SDK: its log lines are only output.
    SDK = "sdk"
    # The engine takes no report from this attempt (it ended, or is unknown).
    REFUSED = "refused"
    # Taken; the trial goes on.
    CONTINUE = "continue"
    # Taken, and the trial is to pause or stop: a script without the SDK cannot hear
    # that, so the shell stops it.
    HALT = "halt"


def take_log_report(
    engine: Engine,
    sdk_reporters: Container[tuple[int, int]],
    number: int,
    attempt: int,
    step: int,
    metrics: dict[str, float],
    now: float,
) -> LogReport:
    """Hand a log line's report to the engine (the caller persists after CONTINUE/HALT)."""
    if (number, attempt) in sdk_reporters:
        return LogReport.SDK
    try:
        verdict = engine.report(number, attempt, step, metrics, now)
    except EngineError:
        return LogReport.REFUSED
    return LogReport.CONTINUE if verdict.decision is Decision.CONTINUE else LogReport.HALT


def experiment_phase(engine: Engine) -> str:
    """The experiment's phase, as status.phase, results and metrics show it."""
    if engine.ended is None:
        return "Running"
    return "Succeeded" if engine.ended.succeeded else "Failed"
