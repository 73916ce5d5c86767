"""What a trial attempt is given: its environment and its rendered command line.

One function for both shells, so a trial sees the same variables on a laptop and in a
pod (docs/trial-protocol.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from kubetune.space import env_name, format_value, render
from kubetune.spec import Container, ExperimentSpec, Scalar


@dataclass(frozen=True)
class AttemptContext:
    experiment: str
    trial: str
    attempt: int
    params: Mapping[str, Scalar]
    resume: bool
    endpoint: str
    token: str
    checkpoint_uri: str


def checkpoint_uri(base: str, experiment: str, trial: str) -> str:
    return f"{base.rstrip('/')}/{experiment}/{trial}"


def trial_env(spec: ExperimentSpec, context: AttemptContext) -> dict[str, str]:
    """The KUBETUNE_* variables of one attempt (the token among them: keep out of logs)."""
    env = {
        "KUBETUNE_EXPERIMENT": context.experiment,
        "KUBETUNE_TRIAL": context.trial,
        "KUBETUNE_ATTEMPT": str(context.attempt),
        "KUBETUNE_ENDPOINT": context.endpoint,
        "KUBETUNE_TOKEN": context.token,
        "KUBETUNE_PARAMS": json.dumps(dict(context.params), sort_keys=True),
        "KUBETUNE_CHECKPOINT_URI": context.checkpoint_uri,
    }
    for name, value in context.params.items():
        env[env_name(name)] = format_value(value)
    scheduler = spec.scheduler
    if scheduler.resource is not None:
        env["KUBETUNE_RESOURCE"] = scheduler.resource
    if scheduler.maxResource is not None:
        env["KUBETUNE_MAX_RESOURCE"] = str(scheduler.maxResource)
    if context.resume:
        env["KUBETUNE_RESUME"] = "1"
    return env


def rendered_command(container: Container, params: Mapping[str, Scalar]) -> list[str]:
    return [render(part, params) for part in (*container.command, *container.args)]


def rendered_env(container: Container, params: Mapping[str, Scalar]) -> dict[str, str]:
    """The container's own `env` entries with literal values, parameters substituted."""
    return {e.name: render(e.value, params) for e in container.env if e.value is not None}
