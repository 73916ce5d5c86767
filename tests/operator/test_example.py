"""The shipped cluster example, as a user would apply it: the real digits.py (torch) in
pods, checkpoints in S3 (moto's server standing in for AWS), bayesian + ASHA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml

from tests.cluster.process_node import Taint
from tests.operator.harness import REPO, OperatorProcess, apply, finished, trials, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        server.stop()


def test_the_cluster_example_runs_with_checkpoints_in_s3(
    control_plane: Any,
    namespace: str,
    operator: OperatorProcess,
    process_node_factory: Any,
    s3: str,
) -> None:
    aws = {
        "AWS_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="kubetune-checkpoints")
    process_node_factory(
        gpus=2,
        taints=[Taint("nvidia.com/gpu", "true")],
        env=aws,
    )
    document = yaml.safe_load((REPO / "manifests/examples/digits-asha.yaml").read_text())
    # A smaller budget than the example's, so that it fits a test: rungs 1 and 3.
    document["spec"]["budget"].update(maxTrials=4, parallelTrials=2)
    document["spec"]["scheduler"]["maxResource"] = 3
    # The process node ignores the image; its WORKDIR (which holds digits.py) is this one.
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["workingDir"] = str(REPO / "trial_image" / "examples")
    apply(control_plane, namespace, document)
    done = wait_for(
        "the example to finish",
        lambda: finished(control_plane, namespace, "digits-mlp"),
        420,
        operator.log_tail,
    )
    assert done["phase"] == "Succeeded", done
    assert 0 < done["bestValue"] < 2.3
    promoted = [t for t in trials(control_plane, namespace) if t["status"]["attempt"] > 1]
    assert promoted, "ASHA promoted no trial"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="kubetune-checkpoints")["Contents"]]
    for trial in promoted:
        name = trial["metadata"]["name"]
        assert any(k.startswith(f"digits-mlp/digits-mlp/{name}/") for k in keys), keys
        resumed = [
            r for r in trial["status"]["history"] if r["type"] == "Reported" and r["attempt"] == 2
        ]
        assert min(r["step"] for r in resumed) == 2  # resumed after its rung-1 checkpoint
    print(json.dumps(done, indent=1)[:2000])
