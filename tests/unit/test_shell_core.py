"""The loop both shells share (kubetune.shell.core): one place for what they repeated."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Sequence

from kubetune.engine import Action, FinishExperiment, LaunchTrial, SampleTrial, StopTrial
from kubetune.shell.core import (
    LogReport,
    attempt_context,
    carry_out,
    decide,
    experiment_phase,
    take_log_report,
)
from tests.engine.helpers import Driver, fixed_params, make_spec


class RecordingPort:
    """A shell whose I/O is a list of what it was asked to do."""

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable
        self.calls: list[tuple[str, object]] = []

    async def persist(self) -> bool:
        self.calls.append(("persist", None))
        return self.durable

    async def launch(self, actions: Sequence[LaunchTrial]) -> None:
        self.calls.append(("launch", [a.number for a in actions]))

    async def stop(self, action: StopTrial) -> None:
        self.calls.append(("stop", action.number))

    def sample(self, action: SampleTrial) -> None:
        self.calls.append(("sample", action.number))

    async def finish(self, action: FinishExperiment) -> None:
        self.calls.append(("finish", action.reason))


def one_of_each() -> list[Action]:
    return [
        StopTrial(0, 1, "stopped early"),
        LaunchTrial(1, "exp-1", 1, {"x": 0.1}, False, None),
        SampleTrial(2),
        LaunchTrial(3, "exp-3", 2, {"x": 0.3}, True, 9),
        FinishExperiment(True, "Done", "all trials ended"),
    ]


def test_every_kind_of_action_reaches_the_shell_and_launches_go_out_together() -> None:
    kinds = {type(a) for a in one_of_each()}
    assert kinds == set(typing.get_args(Action)), "one_of_each must cover engine.Action"
    port = RecordingPort()
    asyncio.run(carry_out(one_of_each(), port))
    assert port.calls == [
        ("launch", [1, 3]),
        ("stop", 0),
        ("sample", 2),
        ("finish", "Done"),
    ]


def test_decisions_are_persisted_before_they_are_carried_out_and_not_at_all_if_not() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 2, "parallelTrials": 2}))
    port = RecordingPort()
    actions = asyncio.run(decide(driver.engine, port, 1000.0))
    # Sampling changes nothing outside: it is asked for first, and overlaps the write.
    assert actions and port.calls == [("sample", 0), ("persist", None), ("launch", [])]
    for number in (0, 1):  # both planned: their parameters come back
        driver.engine.record_suggestion(number, fixed_params(driver.engine, number))
    port = RecordingPort()
    actions = asyncio.run(decide(driver.engine, port, 1001.0))
    assert [a.number for a in actions if isinstance(a, LaunchTrial)] == [0, 1]
    assert port.calls == [("persist", None), ("launch", [0, 1])]
    refused = RecordingPort(durable=False)
    driver.report(0, 1, 0.5)
    assert driver.exit(0)
    assert asyncio.run(decide(driver.engine, refused, 1002.0)) == []
    assert refused.calls == [("persist", None)]


def test_a_log_report_has_one_meaning_per_outcome() -> None:
    driver = Driver(make_spec(scheduler={"name": "none", "maxResource": 5}))
    driver.decide()
    attempt = driver.attempt(0)
    engine = driver.engine
    assert take_log_report(engine, {(0, attempt)}, 0, attempt, 1, {"loss": 1.0}, 1.0) is (
        LogReport.SDK
    )
    assert take_log_report(engine, set(), 0, attempt + 5, 1, {"loss": 1.0}, 1.0) is (
        LogReport.REFUSED
    )
    assert take_log_report(engine, set(), 0, attempt, 1, {"loss": 1.0}, 1.0) is (LogReport.CONTINUE)
    assert take_log_report(engine, set(), 0, attempt, 5, {"loss": 0.5}, 2.0) is LogReport.HALT


def test_the_experiment_phase_and_an_attempt_s_context() -> None:
    driver = Driver(make_spec(budget={"maxTrials": 1}))
    assert experiment_phase(driver.engine) == "Running"
    [launch] = [a for a in driver.decide() if isinstance(a, LaunchTrial)]

    class Tokens:
        def token_for(self, trial: str) -> str:
            return f"token-of-{trial}"

    context = attempt_context(launch, "exp", "http://x/exp", Tokens(), "file:///ckpt/")
    assert (context.trial, context.token) == (launch.name, f"token-of-{launch.name}")
    assert context.checkpoint_uri == f"file:///ckpt/exp/{launch.name}"
    assert attempt_context(launch, "exp", "http://x", Tokens(), None).checkpoint_uri == ""
    driver.report(0, 1, 0.5)
    driver.exit(0)
    driver.decide()
    assert experiment_phase(driver.engine) == "Succeeded"
