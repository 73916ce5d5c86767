"""`$(NAME)` in a trial's command, args and env values: expanded locally as the kubelet
expands it in a pod, so a template behaves the same in both places."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.trialenv import expand_references
from tests.local.test_run import experiment, run, write

VARIABLES = {"A": "1", "KUBETUNE_TRIAL": "t-0"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--trial=$(KUBETUNE_TRIAL)", "--trial=t-0"),
        ("$(A)$(A)", "11"),
        ("$$(A)", "$(A)"),  # escaped
        ("$$$(A)", "$1"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),  # kept as written
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("cost $5", "cost $5"),
        ("ends with $", "ends with $"),
        ("no references", "no references"),
    ],
)
def test_references_expand_as_in_a_pod(text: str, expected: str) -> None:
    assert expand_references(text, VARIABLES) == expected


@pytest.mark.slow
def test_a_local_trial_sees_its_references_expanded(tmp_path: Path) -> None:
    code = (
        "import json, os, sys; "
        "json.dump([sys.argv[1:], os.environ['GREETING']], open('seen.json', 'w')); "
        "print('loss=1')"
    )
    command = ["python", "-c", code, "--trial=$(KUBETUNE_TRIAL)", "$(GREETING)", "$$(GREETING)"]
    document = experiment("refs", command, budget={"maxTrials": 1})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello-$(WHO)"},
    ]
    result = run(write(tmp_path, document), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    args, greeting = json.loads((tmp_path / "seen.json").read_text())
    assert args == ["--trial=refs-0", "hello-world", "$(GREETING)"]
    assert greeting == "hello-world"


@pytest.mark.slow
def test_env_a_local_run_cannot_resolve_is_named(tmp_path: Path) -> None:
    """valueFrom and envFrom need the cluster: a local trial ran without them, unsaid."""
    document = experiment("from", ["python", "-c", "print('loss=1')"], budget={"maxTrials": 1})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["env"] = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    container["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    result = run(write(tmp_path, document), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "env 'KEY' (valueFrom) cannot be resolved locally" in result.stdout
    assert "envFrom cannot be resolved locally" in result.stdout
