"""The report endpoint trials talk to (docs/trial-protocol.md), for local mode and the operator.

Every request is checked in this order, and a refused one changes nothing:
401 no or unknown token, 400 malformed body, 403 a token of another trial,
404 unknown trial, 409 an attempt that is not running. The token is never logged.

Before it is authenticated a request is only read within bounds (MAX_BODY_BYTES read
within the server's body timeout, MAX_JSON_DEPTH levels of nesting, numbers of at most
MAX_NUMBER_CHARS characters that fit a float, a trial name of a Kubernetes name's
length): anything else is a 400 (a 401 for a stranger), never a 500, and nothing is
kept about it (`kubetune.tokens`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from kubetune import observability
from kubetune.engine import EngineError
from kubetune.httpserver import AppServer, Limits
from kubetune.spec import MAX_WORKERS
from kubetune.tokens import TokenAuthority
from kubetune.trials import Verdict

METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
MAX_METRICS = 64
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8  # a report is two levels deep
MAX_NUMBER_CHARS = 40
MAX_TRIAL_NAME = 253  # a Kubernetes object name
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True)
class Report:
    trial: str
    attempt: int
    step: int
    metrics: dict[str, float]
    # spec.workers > 1: the reporting rank; only rank 0's values are recorded (kubetune.gang).
    rank: int = 0
    # The SDK's last report sent again before its process exits: durable before answered.
    flush: bool = False


class BadReport(ValueError):
    pass


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_report(body: Any) -> Report:
    if not isinstance(body, dict):
        raise BadReport("body must be a JSON object")
    unknown = set(body) - {"trial", "attempt", "step", "metrics", "rank", "flush"}
    if unknown:
        raise BadReport(f"unknown fields: {', '.join(sorted(unknown))}")
    trial, attempt, step, metrics = (body.get(k) for k in ("trial", "attempt", "step", "metrics"))
    if not isinstance(trial, str) or not trial or len(trial) > MAX_TRIAL_NAME:
        raise BadReport(f"trial: must be a string of 1 to {MAX_TRIAL_NAME} characters")
    if not _is_int(attempt) or attempt < 1:
        raise BadReport("attempt: must be an integer >= 1")
    if not _is_int(step) or step < 0 or step > 10**9:
        raise BadReport("step: must be an integer between 0 and 10^9")
    rank = body.get("rank", 0)
    if not _is_int(rank) or not 0 <= rank < MAX_WORKERS:
        raise BadReport(f"rank: must be an integer between 0 and {MAX_WORKERS - 1}")
    flush = body.get("flush", False)
    if not isinstance(flush, bool):
        raise BadReport("flush: must be true or false")
    if not isinstance(metrics, dict) or not metrics:
        raise BadReport("metrics: must be a non-empty object")
    if len(metrics) > MAX_METRICS:
        raise BadReport(f"metrics: at most {MAX_METRICS} entries")
    parsed: dict[str, float] = {}
    for name, value in metrics.items():
        if not METRIC_NAME.match(name):
            raise BadReport(f"metrics: invalid name {name[:40]!r}")
        if isinstance(value, str) and value.lower() in _NON_FINITE:
            parsed[name] = _NON_FINITE[value.lower()]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            parsed[name] = float(value)
        else:
            raise BadReport(f"metrics.{name}: must be a number")
    return Report(trial, attempt, step, parsed, rank, flush)


# Strings (escapes included) and the brackets outside them: enough to measure nesting.
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _nesting(raw: bytes, limit: int) -> None:
    depth = 0
    for match in _STRUCTURE.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise BadReport(f"body: nested more than {limit} levels deep")
        elif token in (b"]", b"}"):
            depth -= 1


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadReport(f"body: a number longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text[: MAX_NUMBER_CHARS + 1])
    if len(text) > MAX_NUMBER_CHARS or not math.isfinite(value):
        raise BadReport(f"body: a number out of range ({text[:20]}...)")
    return value


def decode_body(raw: bytes) -> Any:
    """JSON within bounds: BadReport for invalid JSON, deep nesting or outsized numbers
    (which the json module would answer with RecursionError, ValueError or infinity)."""
    _nesting(raw, MAX_JSON_DEPTH)
    try:
        return json.loads(raw, parse_int=_parse_int, parse_float=_parse_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadReport("body is not valid JSON") from error


ReportHandler = Callable[[Report], Awaitable[Verdict]]


@dataclass(frozen=True)
class ReportTarget:
    """Where the reports of one experiment go: its tokens and its engine's handler."""

    tokens: TokenAuthority
    handle: ReportHandler
    known_trials: Callable[[], Iterable[str]]


# Local mode serves one experiment at /v1/reports; the operator serves many, each under
# /ns/<namespace>/exp/<name>, which is the KUBETUNE_ENDPOINT its trials get.
class NotReady:
    """The resolver's answer while it cannot tell yet (an operator rebuilding its state)."""


NOT_READY = NotReady()
Resolver = Callable[[str | None, str | None], ReportTarget | NotReady | None]
RETRY_AFTER_SECONDS = 2


class ReportServer(AppServer):
    """aiohttp application serving the trial protocol, `/metrics` and `/healthz`."""

    def __init__(
        self,
        resolve: Resolver,
        limits: Limits | None = None,
        observer: observability.Observer | None = None,
    ) -> None:
        """`observer`: where reports are counted and `/metrics` read (its own if None)."""
        self.observer = observer if observer is not None else observability.Observer()
        super().__init__(
            web.Application(
                client_max_size=MAX_BODY_BYTES,
                middlewares=[self.observer.refusal_middleware()],
            ),
            limits,
        )
        self.resolve = resolve
        self.app.router.add_post("/v1/reports", self._report)
        self.app.router.add_post("/ns/{namespace}/exp/{experiment}/v1/reports", self._report)
        self.app.router.add_get("/metrics", self.observer.metrics_endpoint)
        self.experiment = ""  # the metrics' experiment label when the path names none

    @classmethod
    def single(
        cls,
        tokens: TokenAuthority,
        handle: ReportHandler,
        known_trials: Callable[[], Iterable[str]],
        experiment: str = "",
        observer: observability.Observer | None = None,
    ) -> ReportServer:
        target = ReportTarget(tokens, handle, known_trials)
        server = cls(lambda namespace, name: target if name is None else None, observer=observer)
        server.experiment = experiment
        return server

    async def _report(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "missing bearer token")
        token = token.strip()
        target = self.resolve(
            request.match_info.get("namespace"), request.match_info.get("experiment")
        )
        if target is None:
            return _error(401, "invalid token")  # no experiment there: nothing to reveal
        if isinstance(target, NotReady):
            # Retryable: the SDK backs off and tries again, the trial does not fail.
            response = _error(503, "not ready: the experiment's state is being rebuilt")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                raw = await request.read()
        except TimeoutError:
            return _error(408, "body not received in time")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "body too large")
        except (RequestPayloadError, HttpProcessingError):
            # A body that cannot be decoded (a Content-Encoding it does not match, say):
            # malformed like any other, not an error of ours (it was a 500).
            return _refuse_stranger(target, token) or _error(400, "body could not be decoded")
        try:
            report = parse_report(decode_body(raw))
        except BadReport as error:
            return _refuse_stranger(target, token) or _error(400, str(error))
        if not target.tokens.verify(token, report.trial):
            owner = target.tokens.owner(token, target.known_trials())
            if owner is None:
                return _error(401, "invalid token")
            self.log.warning("trial %s sent a report for trial %s", owner, report.trial)
            return _error(403, "token belongs to another trial")
        namespace = request.match_info.get("namespace", "")
        experiment = request.match_info.get("experiment", self.experiment)
        observability.bind_log_context(namespace, experiment)
        started = time.perf_counter()
        try:
            verdict = await target.handle(report)
        except EngineError as error:
            return _error(error.status, str(error))
        seconds = time.perf_counter() - started
        self.observer.report_answered(namespace, experiment, verdict.decision.value, seconds)
        answer: dict[str, Any] = {"decision": verdict.decision.value, "reason": verdict.reason}
        if verdict.checkpoint_and_exit:  # a reclaim notice (operator/notices.py)
            answer["checkpointAndExit"] = True
        if not verdict.durable:  # the SDK sends it again, with "flush", before it exits
            answer["durable"] = False
        return web.json_response(answer)


def _refuse_stranger(target: ReportTarget, token: str) -> web.Response | None:
    # A malformed body from a stranger learns nothing about the body's shape.
    if target.tokens.owner(token, target.known_trials()) is None:
        return _error(401, "invalid token")
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
