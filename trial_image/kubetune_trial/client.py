"""``report()``: send one step's metrics and return the runner's decision.

Over HTTP with the standard library only, so the SDK drops into any training image.
Reports are idempotent per (trial, attempt, step) on the server, which is what makes
retrying the very same body after a timeout or a 5xx safe.
"""

from __future__ import annotations

import atexit
import http
import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum

from . import env, interval, leave
from .metrics import encode_value, log_line, validate_metrics, validate_step

log = logging.getLogger("kubetune_trial")

REPORT_PATH = "/v1/reports"
TIMEOUT_VAR = "KUBETUNE_REPORT_TIMEOUT"
TRIES_VAR = "KUBETUNE_REPORT_TRIES"
BACKOFF_VAR = "KUBETUNE_REPORT_BACKOFF"
# A gang's rank > 0 waits for rank 0's report of the same step (HTTP 202 until then):
# polled every RANK_POLL_SECONDS at first, at most every RANK_POLL_MAX, for at most
# KUBETUNE_RANK_WAIT seconds (default an hour: rank 0 may evaluate alone meanwhile).
RANK_WAIT_VAR = "KUBETUNE_RANK_WAIT"
RANK_POLL_SECONDS = 0.05
RANK_POLL_MAX = 1.0

# A private generator: a training script that seeds `random` for reproducibility must
# neither have its stream consumed by our jitter nor make every trial of an experiment
# retry in lock-step after an operator restart.
_jitter = random.Random(os.urandom(16))

# The last report, when its answer said it is not durable yet ("durable": false): sent
# again with "flush" before the process exits (docs/trial-protocol.md), so that an
# operator killed meanwhile cannot lose the attempt's last value.
_unflushed: tuple[str, bytes, str, int] | None = None
_flush_at_exit = False


class Decision(StrEnum):
    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


class ReportError(RuntimeError):
    """A report the runner refused or could not be reached for.

    ``status`` is the HTTP status of the last answer, or None when there was none
    (connection errors, time-outs, missing configuration).
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on one report.

    Defaults ride out an operator restart (its pod rescheduled, its image pulled: a
    minute or more) without letting a trial hang for ever on a runner gone for good.
    A trial that gives up fails, and counts against maxFailedTrials, so err long.
    """

    total_timeout: float = 300.0
    max_tries: int = 100
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    max_try_timeout: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        def number(name: str, default: float, minimum: float) -> float:
            raw = os.environ.get(name)
            if not raw:
                return float(default)
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if not value >= minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {raw!r}")
            return value

        total = number(TIMEOUT_VAR, cls.total_timeout, 0.1)
        tries = number(TRIES_VAR, cls.max_tries, 1)
        if not tries.is_integer():
            raise ValueError(f"{TRIES_VAR} must be an integer, got {tries}")
        return cls(
            total_timeout=total,
            max_tries=int(tries),
            initial_backoff=number(BACKOFF_VAR, cls.initial_backoff, 0.0),
        )

    @property
    def try_timeout(self) -> float:
        # A quarter of the budget leaves room for a retry after one hung request.
        return min(self.max_try_timeout, self.total_timeout / 4)

    def backoff(self, failures: int) -> float:
        """Exponential with "equal jitter": never shorter than half the nominal delay."""
        nominal = min(self.max_backoff, self.initial_backoff * 2 ** (failures - 1))
        return nominal / 2 + _jitter.uniform(0, nominal / 2)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without a body, or carry the bearer
    # token to another host; the report endpoint never redirects, so treat it as an error.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# No proxies: the endpoint is the in-cluster service or loopback, and an HTTP_PROXY set in
# a training image (for dataset downloads) would otherwise see the bearer token.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class _Transient(Exception):
    """No HTTP answer at all: connection refused or reset, time-out, truncated read."""


class _RankWaits(Exception):
    """202: rank 0 has not reported this step yet (a gang's rank > 0 asks again)."""


def _send(url: str, body: bytes, token: str, timeout: float) -> tuple[int, bytes, Message]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
            "User-Agent": "kubetune-trial",
        },
    )
    try:
        try:
            with _opener.open(request, timeout=timeout) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read(), err.headers
    except (OSError, http.client.HTTPException) as err:
        # URLError, socket time-outs and resets are OSErrors; IncompleteRead and
        # RemoteDisconnected are HTTPExceptions. None of them carries the request headers.
        reason = getattr(err, "reason", None) or err
        raise _Transient(f"{type(err).__name__}: {reason}") from err


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


def _server_message(status: int, payload: bytes) -> str:
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    # The protocol fixes no error body; take the usual field names before raw text.
    if isinstance(decoded, dict):
        for key in ("error", "message", "detail", "reason"):
            if isinstance(decoded.get(key), str) and decoded[key]:
                return decoded[key]
    if text:
        return text[:500]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no message"


def _retry_after(headers: Message) -> float | None:
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        # The HTTP-date form is legal but no kubetune server sends it; back-off covers it.
        return None


def _decision(status: int, payload: bytes, step: int, token: str) -> Decision:
    try:
        answer = json.loads(payload)
        decision = Decision(answer["decision"])
    except (ValueError, KeyError, TypeError):
        snippet = _scrub(payload[:200].decode("utf-8", errors="replace"), token)
        raise ReportError(
            status, f"report for step {step}: unexpected answer from the runner: {snippet!r}"
        ) from None
    if isinstance(answer, dict) and answer.get("checkpointAndExit") is True:
        leave.told(_scrub(str(answer.get("reason") or "checkpoint and exit"), token))
    if leave.must_leave(step, stop=decision is Decision.STOP):
        decision = Decision.PAUSE  # the node is going: checkpoint this step, then exit
    if decision is not Decision.CONTINUE:
        reason = answer.get("reason") if isinstance(answer, dict) else None
        reason = _scrub(str(reason), token) if reason else "no reason given"
        log.info("step %d: %s (%s)", step, decision.value, reason)
    return decision


def _remember(url: str, body: bytes, token: str, step: int, payload: bytes) -> None:
    global _unflushed, _flush_at_exit
    try:
        durable = json.loads(payload).get("durable", True) is not False
    except (ValueError, AttributeError):
        durable = True
    _unflushed = None if durable else (url, body, token, step)
    if not durable and not _flush_at_exit:
        atexit.register(flush)
        _flush_at_exit = True


def flush() -> None:
    """Make the last report durable if its answer said it was not yet (the SDK calls
    this at interpreter exit; a script may call it earlier). Never raises."""
    global _unflushed
    pending, _unflushed = _unflushed, None
    if pending is None:
        return
    url, body, token, step = pending
    document = json.loads(body)
    document["flush"] = True
    again = json.dumps(document, separators=(",", ":")).encode()
    try:
        _post(url, again, token, step, RetryPolicy.from_env())
    except ReportError as err:  # 409: the attempt ended, and its end wrote the report
        log.warning("the report of step %d may not be durable: %s", step, err)


def _post(
    url: str, body: bytes, token: str, step: int, policy: RetryPolicy, remember: bool = False
) -> Decision:
    start = time.monotonic()
    deadline = start + policy.total_timeout
    last_status: int | None = None
    last_error = "no try made"
    tries = 0
    while tries < policy.max_tries:
        tries += 1
        timeout = max(0.05, min(policy.try_timeout, deadline - time.monotonic()))
        retry_after: float | None = None
        try:
            status, payload, headers = _send(url, body, token, timeout)
        except _Transient as err:
            last_status, last_error = None, str(err)
        else:
            if status == 202:
                raise _RankWaits(_scrub(_server_message(status, payload), token))
            if 200 <= status < 300:
                decision = _decision(status, payload, step, token)
                if remember:
                    _remember(url, body, token, step, payload)
                return decision
            message = _scrub(_server_message(status, payload), token)
            if status != 429 and status < 500:
                raise ReportError(
                    status, f"report for step {step} refused: HTTP {status}: {message}"
                )
            last_status, last_error = status, f"HTTP {status}: {message}"
            retry_after = _retry_after(headers)
        if tries >= policy.max_tries:
            break
        delay = policy.backoff(tries)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if time.monotonic() + delay >= deadline:
            break
        log.warning(
            "report for step %d failed (%s); retry %d in %.2fs",
            step,
            _scrub(last_error, token),
            tries,
            delay,
        )
        time.sleep(delay)
    elapsed = time.monotonic() - start
    raise ReportError(
        last_status,
        f"report for step {step} failed after {tries} tries in {elapsed:.1f}s: "
        f"{_scrub(last_error, token)}",
    )


def _body(
    trial: str, attempt: int, step: int, metrics: Mapping[str, float], rank: int = 0
) -> bytes:
    document: dict[str, object] = {
        "trial": trial,
        "attempt": attempt,
        "step": step,
        "metrics": {name: encode_value(value) for name, value in metrics.items()},
    }
    if rank > 0:
        document["rank"] = rank
    # allow_nan=False: non-finite values were encoded above, and a bare NaN token is not
    # JSON that a strict server would take.
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def report(step: int, **metrics: float) -> Decision:
    """Report ``metrics`` at ``step`` and return what to do next.

    ``continue``: keep training. ``pause``: save a checkpoint and exit 0. ``stop``: exit 0.
    When the node is being taken away (a reclaim notice, or SIGTERM) the answer is
    ``pause`` and saving the checkpoint exits with code 143 (kubetune_trial.leave).

    Without ``KUBETUNE_ENDPOINT`` (a script run by hand) this prints the protocol's log
    line, e.g. ``epoch=3 val_loss=0.41``, and returns ``continue``.

    Raises ``ValueError`` for a bad step or metric (nothing is sent), and
    :class:`ReportError` when the runner refuses the report (4xx) or cannot be reached
    within ``KUBETUNE_REPORT_TIMEOUT`` seconds (default 300).
    """
    step = validate_step(step)
    values = validate_metrics(metrics)
    info = env.trial_info()
    url = env.endpoint()
    if url is None:
        print(log_line(info.resource or "step", step, values), flush=True)
        return Decision.CONTINUE
    interval.check_report(step)  # pbt: others may start from this step's checkpoint
    leave.install_sigterm()  # SIGTERM: checkpoint at this or the next report, then exit
    token = env.token()
    if token is None:
        raise ReportError(None, f"{env.ENDPOINT} is set but {env.TOKEN} is not")
    if info.trial is None:
        raise ReportError(None, f"{env.ENDPOINT} is set but {env.TRIAL} is not")
    body = _body(info.trial, info.attempt, step, values, info.rank)
    target = url.rstrip("/") + REPORT_PATH
    if info.rank == 0:
        return _post(target, body, token, step, RetryPolicy.from_env(), remember=True)
    return _rank_decision(target, body, token, step)


def _rank_decision(url: str, body: bytes, token: str, step: int) -> Decision:
    """A gang's rank > 0: the decision rank 0's report of `step` got (its own values are
    not recorded), asked again until rank 0 has reported that step."""
    raw = os.environ.get(RANK_WAIT_VAR)
    try:
        wait = float(raw) if raw else 3600.0
    except ValueError:
        raise ValueError(f"{RANK_WAIT_VAR} must be a number, got {raw!r}") from None
    deadline = time.monotonic() + wait
    delay = RANK_POLL_SECONDS
    while True:
        try:
            return _post(url, body, token, step, RetryPolicy.from_env())
        except _RankWaits as waiting:
            if time.monotonic() + delay > deadline:
                raise ReportError(
                    202, f"report for step {step}: waited {wait:g}s for rank 0: {waiting}"
                ) from None
        time.sleep(delay)
        delay = min(RANK_POLL_MAX, delay * 1.5)
