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
    # pbt: the checkpoint this trial starts from until it has its own (its parent's
    # checkpoint location, and the exact step there).
    checkpoint_from: str = ""
    checkpoint_from_step: int | None = None


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
    if scheduler.interval is not None and scheduler.name == "pbt":
        # When to checkpoint (before reporting each multiple of it), without PBT's rules.
        env["KUBETUNE_CHECKPOINT_INTERVAL"] = str(scheduler.interval)
    if context.checkpoint_from and context.checkpoint_from_step is not None:
        env["KUBETUNE_CHECKPOINT_FROM"] = context.checkpoint_from
        env["KUBETUNE_CHECKPOINT_FROM_STEP"] = str(context.checkpoint_from_step)
    return env


def rendered_command(container: Container, params: Mapping[str, Scalar]) -> list[str]:
    return [render(part, params) for part in (*container.command, *container.args)]


def expand_references(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' `$(NAME)` expansion of a container's command, args and env values: a
    defined NAME is replaced by its value, `$$` is a literal `$`, anything else is kept as
    written. A pod gets this from the kubelet; a local trial must get it here, or
    `--trial=$(KUBETUNE_TRIAL)` reaches it as literal text."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(variables.get(name, text[i : end + 1]) if name else "$()")
            i = end + 1
        else:
            out.append(text[i : i + 2])
            i += 2
    return "".join(out)


def local_launch(
    container: Container, params: Mapping[str, Scalar], ours: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """A local trial's argv and its container env (before `ours`, the KUBETUNE_* vars, are
    added), with `$(NAME)` expanded as the kubelet would: env values from the entries
    above them, command and args from the container's whole environment."""
    env: dict[str, str] = {}
    for entry in container.env:
        if entry.value is not None:
            env[entry.name] = expand_references(render(entry.value, params), env)
    known = {**env, **ours}
    argv = [expand_references(part, known) for part in rendered_command(container, params)]
    return argv, env
