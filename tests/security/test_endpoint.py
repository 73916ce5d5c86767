"""The report endpoint as anyone who can reach it sees it: a real aiohttp server on
loopback, the same code that serves local mode and the operator (issue 11).

Nothing a stranger sends may grow the server's memory, raise a 500, hold a connection
open, or write more than a bounded line to the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kubetune.engine import Engine
from kubetune.ingest import Report, ReportServer
from kubetune.tokens import TokenAuthority
from kubetune.trials import Verdict
from tests.unit.test_ingest import body, started_engine

Endpoint = tuple[ReportServer, str, Engine, TokenAuthority]


async def serve(engine: Engine, tokens: TokenAuthority, **limits: Any) -> ReportServer:
    async def handle(report: Report) -> Verdict:
        trial = engine.trial_by_name(report.trial)
        return engine.report(trial.number, report.attempt, report.step, report.metrics, 0.0)

    server = ReportServer.single(tokens, handle, lambda: (t.name for t in engine.trials))
    if limits:
        from kubetune.httpserver import Limits

        server.limits = Limits(**limits)
    await server.start()
    return server


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    engine = started_engine()
    tokens = TokenAuthority(b"k" * 32, "ns/exp/uid")
    server = await serve(engine, tokens)
    yield server, f"http://127.0.0.1:{server.port}/v1/reports", engine, tokens
    await server.stop()


async def post_raw(
    session: aiohttp.ClientSession, url: str, data: bytes, token: str
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.post(url, data=data, headers=headers) as response:
        return response.status, await response.text()


# ----- memory: no state keyed by what a stranger sends ------------------------------------


def test_the_authority_remembers_only_verified_tokens_and_a_bounded_number() -> None:
    tokens = TokenAuthority(b"k" * 32, "ns/exp/uid", cache_size=100)
    for n in range(6000):
        assert not tokens.verify("junk", f"exp-{n}-{'x' * 200}")
    assert tokens.cached == 0
    for n in range(300):
        assert tokens.verify(tokens.token_for(f"exp-{n}"), f"exp-{n}")
    assert tokens.cached == 100  # least recently verified first out
    # The owner of a token forgotten is still found among the trials the server knows.
    assert tokens.owner(tokens.token_for("exp-0"), (f"exp-{n}" for n in range(300))) == "exp-0"
    assert tokens.owner("junk", (f"exp-{n}" for n in range(300))) is None
    assert tokens.cached == 100


async def test_junk_tokens_with_unique_trial_names_leave_no_trace(endpoint: Endpoint) -> None:
    """6,000 requests, each with `Bearer junk` and a trial name never seen: all 401, and
    the server's memory does not grow with them (the old authority kept a token per name)."""
    _, url, engine, _ = endpoint
    before = list(engine.history)
    connector = aiohttp.TCPConnector(limit=16)

    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def junk(first: int, last: int) -> None:
            # 16 clients looping, not a task per request: only the server's memory grows.
            for n in range(first, last, 16):
                report = body(trial=f"exp-{n:06d}-{'y' * 240}")
                status, _ = await post_raw(session, url, json.dumps(report).encode(), "junk")
                statuses[status] += 1

        await asyncio.gather(*(junk(k, 320) for k in range(16)))  # warm up
        gc.collect()
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            await asyncio.gather(*(junk(320 + k, 6320) for k in range(16)))
            gc.collect()
            end, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert statuses == {401: 6320}
    growth = end - start
    # Each remembered name would hold >300 bytes: 6,000 of them, about 2 MB.
    assert growth < 400_000, f"memory grew by {growth} bytes over 6,000 refused requests"
    assert engine.history == before


# ----- bounded parsing: 400, never a 500 ---------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"[" * 30000, "nested"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
        (json.dumps(body()).replace('"step": 1', '"step": ' + "9" * 5001).encode(), "number"),
        (json.dumps(body()).replace("0.5", "1e400").encode(), "number"),
        (json.dumps(body()).replace("0.5", "1" + "0" * 400).encode(), "number"),
        (json.dumps(body()).replace("0.5", "-1e-400" + "0" * 100).encode(), "number"),
        (json.dumps(body(trial="exp-0" + "z" * 60_000)).encode(), "trial"),
    ],
    ids=["brackets", "objects", "5001-digit int", "1e400", "400-digit int", "long float", "name"],
)
async def test_outsized_json_is_a_400_with_one_bounded_log_line_at_most(
    endpoint: Endpoint, payload: bytes, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, url, engine, tokens = endpoint
    before = list(engine.history)
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        status, text = await post_raw(session, url, payload, tokens.token_for("exp-0"))
        assert (status, fragment in text) == (400, True), text[:300]
        # A stranger sending the same learns nothing about the body's shape.
        assert (await post_raw(session, url, payload, "junk"))[0] == 401
    assert engine.history == before
    assert_bounded(caplog.records)


def assert_bounded(records: list[logging.LogRecord], most: int = 25) -> None:
    ours = [r for r in records if r.name.startswith(("kubetune", "aiohttp"))]
    assert len(ours) <= most, [r.getMessage()[:100] for r in ours]
    for record in ours:
        message = record.getMessage()
        assert record.exc_info is None, f"a traceback in the log: {message[:200]}"
        assert "\n" not in message and len(message) <= 400, message[:400]


# ----- connections: read deadlines and a cap -----------------------------------------------


async def open_idle(port: int, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def health(server: ReportServer) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/healthz") as response,
    ):
        return response.status


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    try:
        async with asyncio.timeout(within):
            return await reader.read()
    except TimeoutError:
        return None
    except ConnectionError:  # reset: closed too
        return b""


async def test_idle_and_trickling_connections_are_closed_after_the_head_timeout() -> None:
    engine = started_engine()
    server = await serve(engine, TokenAuthority(b"k" * 32, "s"), header_timeout=1.0)
    try:
        idle = await open_idle(server.port or 0, 50)
        trickling = await open_idle(server.port or 0, 5)
        for _, writer in trickling:
            writer.write(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(0.5)
        assert server.connections == 55
        for _ in range(3):  # a header line now and then: still not a whole head
            await asyncio.sleep(0.4)
            for _, writer in trickling:
                with contextlib.suppress(ConnectionError):  # closed already: good
                    writer.write(b"X-Slow: 1\r\n")
        ends = await asyncio.gather(*(closed_by_server(r, 3.0) for r, _ in idle + trickling))
        assert all(end is not None for end in ends), "a connection is still open"
        assert server.connections == 0
        for _, writer in idle + trickling:
            writer.close()
        # A client that sends its request in time is served as before.
        assert await health(server) == 200
    finally:
        await server.stop()


async def test_a_body_not_sent_in_time_gets_408() -> None:
    engine = started_engine()
    tokens = TokenAuthority(b"k" * 32, "s")
    server = await serve(engine, tokens, body_timeout=1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + tokens.token_for("exp-0").encode() + b"\r\n\r\n{"
        )
        started = time.monotonic()
        async with asyncio.timeout(5.0):
            answer = await reader.readline()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 3.0
        writer.close()
    finally:
        await server.stop()


async def test_connections_over_the_cap_are_refused_at_once() -> None:
    engine = started_engine()
    server = await serve(engine, TokenAuthority(b"k" * 32, "s"), max_connections=10)
    try:
        held = await open_idle(server.port or 0, 10)
        await asyncio.sleep(0.2)
        extra = await open_idle(server.port or 0, 20)
        answers = await asyncio.gather(*(closed_by_server(r, 2.0) for r, _ in extra))
        assert all(a is not None and a.startswith(b"HTTP/1.1 503") for a in answers), answers
        assert server.connections == 10
        for _, writer in held + extra:
            writer.close()
        await asyncio.sleep(0.2)
        assert await health(server) == 200  # room again once they are gone
    finally:
        await server.stop()


# ----- the log: one bounded line per error, and not too many -------------------------------


async def test_errors_are_logged_as_few_bounded_lines(caplog: pytest.LogCaptureFixture) -> None:
    engine = started_engine()
    tokens = TokenAuthority(b"k" * 32, "s")

    async def broken(report: Report) -> Verdict:
        raise RuntimeError("engine broke\n" + "detail " * 5000)

    server = ReportServer.single(tokens, broken, lambda: (t.name for t in engine.trials))
    await server.start()
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{server.port}/v1/reports"
    try:
        async with aiohttp.ClientSession() as session:
            data = json.dumps(body()).encode()
            for _ in range(100):
                status, text = await post_raw(session, url, data, tokens.token_for("exp-0"))
                assert status == 500 and "detail" not in text
        for _ in range(100):  # malformed HTTP: aiohttp's own errors
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            answer = await closed_by_server(reader, 5.0)
            assert answer is not None and answer.split(b"\r\n")[0].endswith(b"400 Bad Request")
            writer.close()
    finally:
        await server.stop()
    assert_bounded(caplog.records)
