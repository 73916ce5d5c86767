"""report(): the wire format, decisions, retries, errors and the standalone path."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import traceback

import numpy as np
import pytest

import kubetune_trial as kt
from kubetune.ports import free_port

from .conftest import TOKEN, TRIAL
from .protocol_server import Fault, ProtocolServer


def test_body_and_headers_follow_the_protocol(
    server: ProtocolServer, trial_env: dict[str, str]
) -> None:
    assert kt.report(3, val_loss=0.41, val_accuracy=0.9) is kt.Decision.CONTINUE
    [request] = server.requests
    assert request.path == "/v1/reports"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "trial": TRIAL,
        "attempt": 1,
        "step": 3,
        "metrics": {"val_loss": 0.41, "val_accuracy": 0.9},
    }


def test_attempt_comes_from_the_environment(
    server: ProtocolServer, trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.trials[TRIAL].attempt = 2
    monkeypatch.setenv("KUBETUNE_ATTEMPT", "2")
    kt.report(4, loss=1.0)
    assert server.reports()[0]["attempt"] == 2


@pytest.mark.parametrize("suffix", ["/", "/kubetune", "/kubetune/"])
def test_endpoint_path_prefix_is_kept(
    server: ProtocolServer,
    trial_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    monkeypatch.setenv("KUBETUNE_ENDPOINT", server.url + suffix)
    kt.report(1, loss=1.0)
    assert server.requests[0].path == suffix.rstrip("/") + "/v1/reports"


@pytest.mark.parametrize("answer", ["continue", "pause", "stop"])
def test_decision_is_parsed(server: ProtocolServer, trial_env: dict[str, str], answer: str) -> None:
    server.decide = lambda trial, attempt, step: answer
    decision = kt.report(5, loss=0.2)
    assert decision is kt.Decision(answer)
    assert decision == answer  # a str Enum: comparable with the protocol's spelling
    assert isinstance(decision, str)


def test_unknown_decision_is_an_error(server: ProtocolServer, trial_env: dict[str, str]) -> None:
    server.decide = lambda trial, attempt, step: "explode"
    with pytest.raises(kt.ReportError, match=r"unexpected answer.*explode") as info:
        kt.report(1, loss=0.2)
    assert info.value.status == 200


def test_non_finite_values_travel_as_strings(
    server: ProtocolServer, trial_env: dict[str, str]
) -> None:
    kt.report(2, a=math.nan, b=math.inf, c=-math.inf, d=0.5)
    raw = server.requests[0].body.decode()
    assert "NaN" not in raw and "Infinity" not in raw
    assert json.loads(raw)["metrics"] == {"a": "nan", "b": "inf", "c": "-inf", "d": 0.5}


def test_numeric_like_values_are_accepted(
    server: ProtocolServer, trial_env: dict[str, str]
) -> None:
    class ZeroDimTensor:  # what `loss` is in a torch loop before .item()
        def __float__(self) -> float:
            return 0.25

    kt.report(np.int64(7), a=np.float32(0.5), b=3, c=ZeroDimTensor(), **{"top.k": 0.75})
    assert server.reports()[0]["step"] == 7
    assert server.reports()[0]["metrics"] == {"a": 0.5, "b": 3.0, "c": 0.25, "top.k": 0.75}


@pytest.mark.parametrize(
    ("step", "metrics", "message"),
    [
        (-1, {"loss": 1.0}, "non-negative integer"),
        (1.0, {"loss": 1.0}, "non-negative integer"),
        (True, {"loss": 1.0}, "non-negative integer"),
        ("3", {"loss": 1.0}, "non-negative integer"),
        (1, {}, "at least one metric"),
        (1, {"loss": "0.3"}, "'loss' must be a number"),
        (1, {"loss": True}, "'loss' must be a number"),
        (1, {"loss": None}, "'loss' must be a number"),
        (1, {"loss": [0.1, 0.2]}, "'loss' must be a number"),
        (1, {"val-loss": 1.0}, "metric name 'val-loss'"),
        (1, {"1st": 1.0}, "metric name '1st'"),
        (10**9 + 1, {"loss": 1.0}, "at most 1000000000"),
        (1, {"x" * 129: 1.0}, "longer than 128"),
        (1, {f"m{i}": 1.0 for i in range(65)}, "at most 64 metrics"),
    ],
)
def test_bad_input_is_refused_before_sending(
    server: ProtocolServer, trial_env: dict[str, str], step: object, metrics: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        kt.report(step, **metrics)  # type: ignore[arg-type]
    assert server.requests == []


def test_retries_5xx_with_the_same_body(server: ProtocolServer, trial_env: dict[str, str]) -> None:
    server.faults = [Fault(status=503), Fault(status=502), Fault(status=500)]
    server.decide = lambda trial, attempt, step: "pause"
    assert kt.report(3, loss=0.5) is kt.Decision.PAUSE
    assert len(server.requests) == 4
    assert len({r.body for r in server.requests}) == 1


def test_retries_429_after_retry_after(server: ProtocolServer, trial_env: dict[str, str]) -> None:
    server.faults = [Fault(status=429, headers={"Retry-After": "0.3"})]
    start = time.monotonic()
    assert kt.report(3, loss=0.5) is kt.Decision.CONTINUE
    assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 2


def test_retries_a_dropped_connection(server: ProtocolServer, trial_env: dict[str, str]) -> None:
    server.faults = [Fault(drop=True), Fault(drop=True)]
    assert kt.report(1, loss=0.5) is kt.Decision.CONTINUE
    assert len(server.requests) == 3


def test_retries_after_a_timeout(
    server: ProtocolServer, trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETUNE_REPORT_TIMEOUT", "2")  # a try may take 2/4 = 0.5 s
    server.faults = [Fault(delay=1.5)]
    start = time.monotonic()
    assert kt.report(1, loss=0.5) is kt.Decision.CONTINUE
    assert time.monotonic() - start < 1.5
    assert len(server.requests) == 2


def test_retries_connection_refused_until_the_runner_is_up(
    trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("KUBETUNE_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("KUBETUNE_REPORT_BACKOFF", "0.1")
    late: list[ProtocolServer] = []

    def start_late() -> None:
        srv = ProtocolServer(port=port)
        srv.add_trial(TRIAL, TOKEN)
        late.append(srv.start())

    timer = threading.Timer(0.4, start_late)
    timer.start()
    try:
        assert kt.report(2, loss=0.5) is kt.Decision.CONTINUE
    finally:
        timer.join()
        for srv in late:
            srv.stop()
    assert [r["step"] for r in late[0].reports()] == [2]


def test_gives_up_after_max_tries(
    server: ProtocolServer, trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETUNE_REPORT_TRIES", "3")
    server.faults = [Fault(status=503, body={"error": "operator restarting"})] * 5
    with pytest.raises(kt.ReportError) as info:
        kt.report(3, loss=0.5)
    assert info.value.status == 503
    assert "3 tries" in str(info.value) and "operator restarting" in str(info.value)
    assert len(server.requests) == 3


def test_gives_up_at_the_total_timeout(
    trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETUNE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KUBETUNE_REPORT_TIMEOUT", "1")
    monkeypatch.setenv("KUBETUNE_REPORT_TRIES", "1000")
    monkeypatch.setenv("KUBETUNE_REPORT_BACKOFF", "0.2")
    start = time.monotonic()
    with pytest.raises(kt.ReportError, match="refused") as info:
        kt.report(3, loss=0.5)
    assert time.monotonic() - start < 2.0
    assert info.value.status is None


def _refusal(server: ProtocolServer, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    if case == "400":
        server.faults = [Fault(status=400, body={"error": "metrics: val_loss is not a number"})]
    elif case == "401":
        monkeypatch.setenv("KUBETUNE_TOKEN", "tok-nobody-has")
    elif case == "403":
        monkeypatch.setenv("KUBETUNE_TOKEN", "tok-of-another-trial")
    elif case == "404":
        server.add_trial("ghost", "tok-ghost")
        monkeypatch.setenv("KUBETUNE_TOKEN", "tok-ghost")
        monkeypatch.setenv("KUBETUNE_TRIAL", "never-created")
    elif case == "409":
        server.trials[TRIAL].attempt = 2  # attempt 1 has been superseded


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("400", "val_loss is not a number"),
        ("401", "unknown token"),
        ("403", "not trial digits-mlp-7's"),
        ("404", "unknown trial never-created"),
        ("409", "attempt 1 is not the running attempt"),
    ],
)
def test_client_errors_are_not_retried(
    server: ProtocolServer,
    trial_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    message: str,
) -> None:
    _refusal(server, monkeypatch, case)
    with pytest.raises(kt.ReportError) as info:
        kt.report(3, loss=0.5)
    assert info.value.status == int(case)
    assert f"HTTP {case}" in str(info.value)
    assert message in str(info.value)
    assert len(server.requests) == 1


def test_redirects_are_not_followed(server: ProtocolServer, trial_env: dict[str, str]) -> None:
    server.faults = [Fault(status=307, headers={"Location": "http://example.invalid/steal"})]
    with pytest.raises(kt.ReportError, match="HTTP 307") as info:
        kt.report(3, loss=0.5)
    assert info.value.status == 307
    assert len(server.requests) == 1


def test_proxy_variables_are_ignored(
    server: ProtocolServer, trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert kt.report(1, loss=0.5) is kt.Decision.CONTINUE


def _all_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.args)


def test_token_never_appears_in_errors_or_logs(
    server: ProtocolServer,
    trial_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kubetune_trial")
    monkeypatch.setenv("KUBETUNE_TRIAL", "never-created")
    # A server that echoes the token, in a refusal and in retried 5xx answers.
    other = "tok-of-another-trial"
    server.faults = [Fault(status=503, body={"error": f"overloaded, token {other}"})]
    monkeypatch.setenv("KUBETUNE_TOKEN", other)
    with pytest.raises(kt.ReportError) as refused:
        kt.report(3, loss=0.5)
    monkeypatch.setenv("KUBETUNE_TOKEN", TOKEN)
    server.faults = [Fault(status=401, body={"error": f"revoked: {TOKEN}"})]
    with pytest.raises(kt.ReportError) as revoked:
        kt.report(3, loss=0.5)
    monkeypatch.setenv("KUBETUNE_REPORT_TRIES", "2")
    server.faults = [Fault(status=500, body={"error": f"boom {TOKEN}"})] * 2
    with pytest.raises(kt.ReportError) as exhausted:
        kt.report(3, loss=0.5)
    monkeypatch.setenv("KUBETUNE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(kt.ReportError) as unreachable:
        kt.report(3, loss=0.5)
    assert "revoked" in str(revoked.value) and "boom" in str(exhausted.value)
    for info in (refused, revoked, exhausted, unreachable):
        assert TOKEN not in _all_text(info.value)
        assert other not in _all_text(info.value)
    assert caplog.records, "retries should have been logged"
    assert TOKEN not in caplog.text and other not in caplog.text


def test_missing_token_is_a_clear_error(
    server: ProtocolServer, trial_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBETUNE_TOKEN")
    with pytest.raises(kt.ReportError, match="KUBETUNE_TOKEN is not"):
        kt.report(1, loss=0.5)
    assert server.requests == []


def test_standalone_prints_the_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert kt.params() == {}
    assert kt.report(3, val_loss=0.41, val_accuracy=0.9) is kt.Decision.CONTINUE
    assert kt.report(4, val_loss=math.nan, val_accuracy=1) is kt.Decision.CONTINUE
    assert capsys.readouterr().out.splitlines() == [
        "step=3 val_loss=0.41 val_accuracy=0.9",
        "step=4 val_loss=nan val_accuracy=1.0",
    ]


def test_standalone_line_uses_the_resource_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETUNE_RESOURCE", "epoch")
    kt.report(3, val_loss=0.25)
    assert capsys.readouterr().out == "epoch=3 val_loss=0.25\n"


def test_standalone_still_validates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="metric name"):
        kt.report(1, **{"bad name": 1.0})
    assert capsys.readouterr().out == ""


def test_a_report_not_yet_durable_is_sent_again_with_flush_before_the_process_exits(
    server: ProtocolServer, trial_env: dict[str, str]
) -> None:
    """The operator answers `"durable": false` for reports no decision reads; the SDK
    sends the last such report again, with `"flush": true`, at interpreter exit."""
    server.late_steps = {2, 3}
    script = "import kubetune_trial as kt\nfor s in (1, 2, 3): kt.report(s, loss=1.0 / s)\n"
    env = {**os.environ, **trial_env}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    sent = server.reports()
    assert [(r["step"], r.get("flush", False)) for r in sent] == [
        (1, False),
        (2, False),
        (3, False),
        (3, True),
    ]
    assert sent[-1]["metrics"] == sent[-2]["metrics"]


def test_nothing_is_sent_again_once_a_later_report_was_durable(
    server: ProtocolServer, trial_env: dict[str, str]
) -> None:
    server.late_steps = {1, 2}
    for step in (1, 2, 3):
        kt.report(step, loss=1.0)
    kt.flush()
    assert [r.get("flush", False) for r in server.reports()] == [False, False, False]
    server.late_steps = {4}
    kt.report(4, loss=1.0)
    kt.flush()
    kt.flush()  # once only
    assert [(r["step"], r.get("flush", False)) for r in server.reports()][3:] == [
        (4, False),
        (4, True),
    ]
