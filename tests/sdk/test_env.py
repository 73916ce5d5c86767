"""params(), param() and trial_info() read the protocol's environment."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kubetune_trial as kt

TRIAL_IMAGE = Path(__file__).resolve().parents[2] / "trial_image"


def test_params_keep_their_json_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KUBETUNE_PARAMS",
        '{"lr": 0.01, "hidden": 64, "optimizer": "sgd", "batchnorm": true, "wd": 1e-4}',
    )
    values = kt.params()
    assert values == {"lr": 0.01, "hidden": 64, "optimizer": "sgd", "batchnorm": True, "wd": 1e-4}
    assert type(values["lr"]) is float
    assert type(values["hidden"]) is int
    assert type(values["optimizer"]) is str
    assert type(values["batchnorm"]) is bool


def test_param_falls_back_to_default_for_inactive_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBETUNE_PARAMS", '{"optimizer": "adam"}')
    assert kt.param("optimizer") == "adam"
    assert kt.param("momentum") is None
    assert kt.param("momentum", 0.9) == 0.9


def test_params_are_empty_without_a_runner() -> None:
    assert kt.params() == {}
    assert kt.param("lr", 0.1) == 0.1


def test_params_returns_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_PARAMS", '{"lr": 0.01}')
    kt.params()["lr"] = 99.0
    assert kt.params() == {"lr": 0.01}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{lr: 0.1}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"layers": [64, 32]}', "parameter 'layers'"),
        ('{"x": null}', "parameter 'x'"),
    ],
)
def test_malformed_params_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    monkeypatch.setenv("KUBETUNE_PARAMS", raw)
    with pytest.raises(ValueError, match=message) as info:
        kt.params()
    assert "KUBETUNE_PARAMS" in str(info.value)


def test_trial_info_reads_every_variable(trial_env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("KUBETUNE_ATTEMPT", "3")
    monkeypatch.setenv("KUBETUNE_RESOURCE", "epoch")
    monkeypatch.setenv("KUBETUNE_MAX_RESOURCE", "27")
    monkeypatch.setenv("KUBETUNE_RESUME", "1")
    info = kt.trial_info()
    assert info == kt.TrialInfo(
        experiment="digits-mlp",
        trial="digits-mlp-7",
        attempt=3,
        resource="epoch",
        max_resource=27,
        resume=True,
        checkpoint_uri=trial_env["KUBETUNE_CHECKPOINT_URI"],
        standalone=False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.attempt = 4  # type: ignore[misc]


def test_trial_info_defaults_when_run_by_hand() -> None:
    info = kt.trial_info()
    assert info == kt.TrialInfo(
        experiment=None,
        trial=None,
        attempt=1,
        resource=None,
        max_resource=None,
        resume=False,
        checkpoint_uri=None,
        standalone=True,
    )


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("", False), ("true", True)])
def test_resume_flag_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("KUBETUNE_RESUME", raw)
    assert kt.trial_info().resume is expected


def test_integral_float_max_resource_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_MAX_RESOURCE", "9.0")
    assert kt.trial_info().max_resource == 9


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("KUBETUNE_ATTEMPT", "two"),
        ("KUBETUNE_ATTEMPT", "0"),
        ("KUBETUNE_MAX_RESOURCE", "2.5"),
        ("KUBETUNE_MAX_RESOURCE", "-1"),
        ("KUBETUNE_RESUME", "maybe"),
    ],
)
def test_malformed_variables_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=name):
        kt.trial_info()


def test_sdk_needs_only_the_standard_library(tmp_path: Path) -> None:
    """-S: no site-packages at all, so any third-party import would fail here."""
    code = f"""
import sys
sys.path.insert(0, {str(TRIAL_IMAGE)!r})
import kubetune_trial as kt
assert kt.report(2, loss=0.5) == "continue"
kt.save_checkpoint(b"state", 2, uri={str(tmp_path)!r})
assert kt.load_checkpoint(uri={str(tmp_path)!r}) == (2, b"state")
third_party = sorted(m for m in sys.modules if m.split(".")[0] in
                     {{"boto3", "botocore", "pydantic", "aiohttp", "requests", "numpy"}})
assert not third_party, third_party
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "step=2 loss=0.5\n"
