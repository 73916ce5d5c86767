"""The report endpoint: the real aiohttp server in front of a real engine.

Every refused request must leave the engine's history exactly as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from kubetune.engine import Engine, SampleTrial
from kubetune.ingest import Report, ReportServer
from kubetune.samplers import suggest
from kubetune.spec import parse_experiment
from kubetune.tokens import TokenAuthority
from kubetune.trials import Verdict
from tests.unit.test_spec import valid


def started_engine(trials: int = 2) -> Engine:
    document = valid()
    document["spec"]["algorithm"] = {"name": "random", "seed": 1}
    document["spec"]["budget"]["parallelTrials"] = trials
    engine = Engine(parse_experiment(document).spec, "exp")
    for _ in range(trials + 1):
        for action in engine.decide(time.time()):
            if isinstance(action, SampleTrial):
                engine.record_suggestion(
                    action.number, suggest(*engine.sampler_request(action.number))
                )
    assert len(engine.running()) == trials
    return engine


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, Engine, TokenAuthority]]:
    engine = started_engine()
    tokens = TokenAuthority(b"k" * 32, "ns/exp")

    async def handle(report: Report) -> Verdict:
        trial = engine.trial_by_name(report.trial)
        return engine.report(trial.number, report.attempt, report.step, report.metrics, 0.0)

    server = ReportServer.single(tokens, handle, lambda: (t.name for t in engine.trials))
    url = await server.start()
    yield url, engine, tokens
    await server.stop()


async def post(url: str, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/reports", data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


def body(trial: str = "exp-0", attempt: int = 1, step: int = 1, **metrics: Any) -> dict[str, Any]:
    return {
        "trial": trial,
        "attempt": attempt,
        "step": step,
        "metrics": metrics or {"val_loss": 0.5},
    }


async def test_an_authentic_report_gets_the_engines_decision(endpoint) -> None:
    url, engine, tokens = endpoint
    status, answer = await post(url, body(), tokens.token_for("exp-0"))
    assert status == 200
    assert answer["decision"] == "pause"  # ASHA: step 1 is rung 0
    assert engine.trials[0].values == {1: 0.5}


async def test_reports_are_idempotent_per_trial_attempt_and_step(endpoint) -> None:
    url, engine, tokens = endpoint
    token = tokens.token_for("exp-0")
    first = await post(url, body(), token)
    length = len(engine.history)
    again = await post(url, body(val_loss=0.1), token)
    assert again == first
    assert len(engine.history) == length
    assert engine.trials[0].values == {1: 0.5}


@pytest.mark.parametrize(
    ("make_request", "status", "fragment"),
    [
        (lambda tokens: (body(), None), 401, "missing bearer token"),
        (lambda tokens: (body(), "not-a-token"), 401, "invalid token"),
        (lambda tokens: (b"{not json", "stranger"), 401, "invalid token"),
        (lambda tokens: (body(), tokens.token_for("exp-1")), 403, "another trial"),
        (lambda tokens: (b"{not json", tokens.token_for("exp-0")), 400, "not valid JSON"),
        (lambda tokens: (body(step=-1), tokens.token_for("exp-0")), 400, "step"),
        (lambda tokens: (body(attempt=0), tokens.token_for("exp-0")), 400, "attempt"),
        (lambda tokens: (body(val_loss="high"), tokens.token_for("exp-0")), 400, "number"),
        (lambda tokens: ({**body(), "extra": 1}, tokens.token_for("exp-0")), 400, "unknown fields"),
        (lambda tokens: ({"trial": "exp-0"}, tokens.token_for("exp-0")), 400, "attempt"),
        (lambda tokens: ({**body(), "flush": 1}, tokens.token_for("exp-0")), 400, "flush"),
        (lambda tokens: (body(trial="exp-9"), tokens.token_for("exp-9")), 404, "unknown trial"),
        (lambda tokens: (body(attempt=2), tokens.token_for("exp-0")), 409, "not running"),
    ],
)
async def test_refused_reports_change_nothing(endpoint, make_request, status, fragment) -> None:
    url, engine, tokens = endpoint
    before = list(engine.history)
    payload, token = make_request(tokens)
    got, answer = await post(url, payload, token)
    assert got == status
    assert fragment in answer["error"]
    assert engine.history == before


async def test_non_finite_objective_fails_the_trial(endpoint) -> None:
    url, engine, tokens = endpoint
    status, answer = await post(url, body(val_loss="nan"), tokens.token_for("exp-0"))
    assert (status, answer["decision"]) == (200, "stop")
    assert "nan" in answer["reason"]
    assert engine.best() is None


def test_tokens_are_derived_and_scoped() -> None:
    one = TokenAuthority(b"k" * 32, "ns/exp")
    again = TokenAuthority(b"k" * 32, "ns/exp")
    other_scope = TokenAuthority(b"k" * 32, "ns/other")
    assert one.token_for("exp-0") == again.token_for("exp-0")
    assert one.token_for("exp-0") != one.token_for("exp-1")
    assert one.token_for("exp-0") != other_scope.token_for("exp-0")
    assert again.owner(one.token_for("exp-1"), ["exp-0", "exp-1"]) == "exp-1"
    with pytest.raises(ValueError, match="16 bytes"):
        TokenAuthority(b"short", "x")


async def test_an_experiment_being_rebuilt_answers_retry_later() -> None:
    from kubetune.ingest import NOT_READY

    server = ReportServer(lambda namespace, experiment: NOT_READY if experiment == "x" else None)
    url = await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/ns/team/exp/x/v1/reports",
                data=json.dumps(body()).encode(),
                headers={"Authorization": "Bearer t"},
            ) as response,
        ):
            assert response.status == 503  # the SDK retries 5xx: the trial does not fail
            assert response.headers["Retry-After"] == "2"
        status, _ = await post(f"{url}/ns/team/exp/y", body(), "t")
        assert status == 401
    finally:
        await server.stop()


async def test_the_answer_says_when_a_report_is_not_durable_yet() -> None:
    """The operator's late writes: `Verdict.durable` False is told on the wire, and a
    report sent again with "flush" reaches the handler with `flush` set."""
    engine = started_engine()
    tokens = TokenAuthority(b"k" * 32, "ns/exp")
    flushes: list[bool] = []

    async def handle(report: Report) -> Verdict:
        flushes.append(report.flush)
        return Verdict.go_on() if report.flush else replace(Verdict.go_on(), durable=False)

    server = ReportServer.single(tokens, handle, lambda: (t.name for t in engine.trials))
    url = await server.start()
    try:
        token = tokens.token_for("exp-0")
        assert await post(url, body(), token) == (
            200,
            {"decision": "continue", "reason": "", "durable": False},
        )
        assert await post(url, {**body(), "flush": True}, token) == (
            200,
            {"decision": "continue", "reason": ""},
        )
    finally:
        await server.stop()
    assert flushes == [False, True]
