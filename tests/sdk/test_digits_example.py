"""The digits examples as real trial processes against the protocol server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TOKEN, TRIAL
from .protocol_server import ProtocolServer

TRIAL_IMAGE = Path(__file__).resolve().parents[2] / "trial_image"
DIGITS = TRIAL_IMAGE / "examples" / "digits.py"
DIGITS_LOGS = TRIAL_IMAGE / "examples" / "digits_logs.py"

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBETUNE_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRIAL_IMAGE), env.get("PYTHONPATH")]))
    # One thread: the machine is shared, and the tiny model gains nothing from more.
    env["OMP_NUM_THREADS"] = "1"
    return env | extra


def trial_env(server: ProtocolServer, checkpoints: Path, params: str, **extra: str) -> dict:
    given = {
        "KUBETUNE_EXPERIMENT": "digits-mlp",
        "KUBETUNE_TRIAL": TRIAL,
        "KUBETUNE_ATTEMPT": "1",
        "KUBETUNE_ENDPOINT": server.url,
        "KUBETUNE_TOKEN": TOKEN,
        "KUBETUNE_PARAMS": params,
        "KUBETUNE_RESOURCE": "epoch",
        "KUBETUNE_MAX_RESOURCE": "5",
        "KUBETUNE_CHECKPOINT_URI": checkpoints.as_uri(),
    }
    return clean_env(**(given | extra))


def run(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def steps(server: ProtocolServer) -> list[tuple[int, int]]:
    return [(r["attempt"], r["step"]) for r in server.reports()]


LINE = re.compile(r"epoch=(\d+) val_loss=(\S+) val_accuracy=(\S+)")


def parse_lines(stdout: str) -> dict[int, tuple[float, float]]:
    lines = [LINE.fullmatch(line) for line in stdout.splitlines()]
    assert all(lines), stdout
    return {int(m[1]): (float(m[2]), float(m[3])) for m in lines if m}


def test_pause_then_resume_continues_after_the_checkpoint(
    server: ProtocolServer, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "ckpt" / "digits-mlp" / TRIAL
    server.decide = lambda trial, attempt, step: "pause" if step == 3 else "continue"
    # The flags disagree with KUBETUNE_PARAMS on purpose: the SDK's parameters win.
    flags = ["--lr", "0.5", "--hidden", "8", "--optimizer", "sgd", "--seed", "3"]
    params = '{"lr": 0.01, "hidden": 32, "optimizer": "adam"}'
    # The same training, uninterrupted and run by hand, alongside (two cores, two runs).
    reference = subprocess.Popen(
        [
            sys.executable,
            str(DIGITS),
            "--lr",
            "0.01",
            "--hidden",
            "32",
            "--optimizer",
            "adam",
            "--seed",
            "3",
            "--epochs",
            "5",
            "--device",
            "cpu",
        ],
        env=clean_env(KUBETUNE_RESOURCE="epoch"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = run(DIGITS, [*flags, "--device", "cpu"], trial_env(server, checkpoints, params))
        assert first.returncode == 0, first.stderr
        assert steps(server) == [(1, 1), (1, 2), (1, 3)]
        assert sorted(os.listdir(checkpoints)) == ["latest", "step-00000003.ckpt"]
        assert "pause" in first.stderr  # the decision and its reason are logged

        server.trials[TRIAL].attempt = 2
        second = run(
            DIGITS,
            [*flags, "--device", "cpu"],
            trial_env(server, checkpoints, params, KUBETUNE_RESUME="1", KUBETUNE_ATTEMPT="2"),
        )
        assert second.returncode == 0, second.stderr
    finally:
        ref_out, ref_err = reference.communicate(timeout=180)
    assert steps(server) == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5)]
    resumed = {r["step"]: r["metrics"] for r in server.reports() if r["attempt"] == 2}
    assert resumed[5]["val_accuracy"] > 0.8
    # Reaching max_resource leaves a final checkpoint for a later promotion.
    assert (checkpoints / "latest").read_text() == "step-00000005.ckpt"

    # Pause + resume reproduces the uninterrupted run exactly.
    assert reference.returncode == 0, ref_err
    uninterrupted = parse_lines(ref_out)
    assert sorted(uninterrupted) == [1, 2, 3, 4, 5]
    for step in (4, 5):
        assert (resumed[step]["val_loss"], resumed[step]["val_accuracy"]) == uninterrupted[step]


def test_stop_exits_at_once_without_a_checkpoint(server: ProtocolServer, tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    server.decide = lambda trial, attempt, step: "stop" if step == 2 else "continue"
    params = '{"lr": 0.05, "hidden": 16, "optimizer": "sgd", "momentum": 0.9}'
    result = run(DIGITS, ["--device", "cpu"], trial_env(server, checkpoints, params))
    assert result.returncode == 0, result.stderr
    assert steps(server) == [(1, 1), (1, 2)]
    assert not checkpoints.exists()


def test_log_line_variant_prints_protocol_lines(tmp_path: Path) -> None:
    result = run(
        DIGITS_LOGS,
        ["--lr", "0.05", "--hidden", "32", "--optimizer", "sgd", "--momentum", "0.9"],
        clean_env(KUBETUNE_MAX_RESOURCE="3"),
    )
    assert result.returncode == 0, result.stderr
    metrics = parse_lines(result.stdout)
    assert sorted(metrics) == [1, 2, 3]
    assert metrics[3][1] > 0.8
    assert metrics[3][0] < metrics[1][0]
