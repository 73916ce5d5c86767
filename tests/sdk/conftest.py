"""Fixtures for the trial SDK tests: a protocol server, a trial's environment, moto S3."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prereq import require_module

from .protocol_server import ProtocolServer

TRIAL = "digits-mlp-7"
TOKEN = "tok-3f9a1c77e0b24d5e8a61c2b9d4f0e1a7"  # long and unique: easy to spot in any text


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KUBETUNE_* or AWS_* variable of the outer shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("KUBETUNE_", "AWS_")):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[ProtocolServer]:
    srv = ProtocolServer().start()
    srv.add_trial(TRIAL, TOKEN)
    srv.add_trial("digits-mlp-8", "tok-of-another-trial")
    yield srv
    srv.stop()


@pytest.fixture
def trial_env(
    monkeypatch: pytest.MonkeyPatch, server: ProtocolServer, tmp_path: Path
) -> dict[str, str]:
    """The environment a runner gives attempt 1 of TRIAL, with fast retries."""
    values = {
        "KUBETUNE_EXPERIMENT": "digits-mlp",
        "KUBETUNE_TRIAL": TRIAL,
        "KUBETUNE_ATTEMPT": "1",
        "KUBETUNE_ENDPOINT": server.url,
        "KUBETUNE_TOKEN": TOKEN,
        "KUBETUNE_PARAMS": '{"lr": 0.01, "hidden": 64, "optimizer": "adam"}',
        "KUBETUNE_CHECKPOINT_URI": (tmp_path / "ckpt" / "digits-mlp" / TRIAL).as_uri(),
        "KUBETUNE_REPORT_BACKOFF": "0.01",
        "KUBETUNE_REPORT_TIMEOUT": "10",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    moto_server = require_module("moto.server", "moto[server] (the dev extra)")
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """A fresh bucket on moto's server, reachable through AWS_ENDPOINT_URL."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # A developer's ~/.aws must not point the SDK elsewhere.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return bucket
