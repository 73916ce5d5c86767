"""save_checkpoint() / load_checkpoint() on s3:// URIs, against moto's server."""

from __future__ import annotations

import boto3
import pytest

import kubetune_trial as kt
from kubetune.ports import free_port


def keys(bucket: str, prefix: str = "") -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_round_trip_rotation_and_layout(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_URI", f"s3://{s3_bucket}/runs/digits-mlp/t-7")
    assert kt.load_checkpoint() is None
    for step in range(1, 5):
        uri = kt.save_checkpoint(f"state {step}".encode(), step)
    assert uri == f"s3://{s3_bucket}/runs/digits-mlp/t-7/step-00000004.ckpt"
    assert keys(s3_bucket) == [
        "runs/digits-mlp/t-7/latest",
        "runs/digits-mlp/t-7/step-00000003.ckpt",
        "runs/digits-mlp/t-7/step-00000004.ckpt",
    ]
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key="runs/digits-mlp/t-7/latest")
    assert body["Body"].read() == b"step-00000004.ckpt"
    assert kt.load_checkpoint() == (4, b"state 4")


def test_trials_with_prefix_like_names_do_not_interfere(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # t-1 is a string prefix of t-10, and t-1/sub is "inside" t-1: neither is t-1's.
    for trial in ("t-10", "t-1/sub"):
        for step in (5, 6, 7):
            kt.save_checkpoint(b"other", step, uri=f"s3://{s3_bucket}/exp/{trial}")
    monkeypatch.setenv("KUBETUNE_CHECKPOINT_URI", f"s3://{s3_bucket}/exp/t-1")
    assert kt.load_checkpoint() is None
    kt.save_checkpoint(b"mine", 2)
    assert kt.load_checkpoint() == (2, b"mine")
    assert len(keys(s3_bucket, "exp/t-10/")) == 3
    assert len(keys(s3_bucket, "exp/t-1/sub/")) == 3


def test_bucket_root(s3_bucket: str) -> None:
    kt.save_checkpoint(b"root", 1, uri=f"s3://{s3_bucket}")
    assert keys(s3_bucket) == ["latest", "step-00000001.ckpt"]
    assert kt.load_checkpoint(uri=f"s3://{s3_bucket}/") == (1, b"root")


def test_s3_specific_endpoint_wins(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    kt.save_checkpoint(b"via s3 endpoint", 1, uri=f"s3://{s3_bucket}/p")
    assert kt.load_checkpoint(uri=f"s3://{s3_bucket}/p") == (1, b"via s3 endpoint")


def test_missing_bucket_is_an_error_not_none(s3_bucket: str) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="NoSuchBucket"):
        kt.load_checkpoint(uri=f"s3://{s3_bucket}-gone/p")
