"""What the runner tells a trial through its environment (docs/trial-protocol.md).

Everything is read from ``os.environ`` on each call rather than cached at import, so a
script (or a test) that sets variables after importing the SDK sees them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

ParamValue = bool | int | float | str

ENDPOINT = "KUBETUNE_ENDPOINT"
TOKEN = "KUBETUNE_TOKEN"
EXPERIMENT = "KUBETUNE_EXPERIMENT"
TRIAL = "KUBETUNE_TRIAL"
ATTEMPT = "KUBETUNE_ATTEMPT"
PARAMS = "KUBETUNE_PARAMS"
RESOURCE = "KUBETUNE_RESOURCE"
MAX_RESOURCE = "KUBETUNE_MAX_RESOURCE"
CHECKPOINT_URI = "KUBETUNE_CHECKPOINT_URI"
RESUME = "KUBETUNE_RESUME"
# Population-based training: checkpoint before reporting every multiple of the interval;
# start from another member's checkpoint (location and exact step) until one's own exists.
CHECKPOINT_INTERVAL = "KUBETUNE_CHECKPOINT_INTERVAL"
CHECKPOINT_FROM = "KUBETUNE_CHECKPOINT_FROM"
CHECKPOINT_FROM_STEP = "KUBETUNE_CHECKPOINT_FROM_STEP"
# A distributed trial (spec.workers > 1): torch.distributed's own variables, which kubetune
# sets for each rank (and torchrun for the processes it starts).
RANK = "RANK"
WORLD_SIZE = "WORLD_SIZE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class TrialInfo:
    """Who this process is, as the runner sees it.

    ``standalone`` is true when no report endpoint is configured (a script run by hand):
    reports then become log lines and every decision is ``continue``.
    """

    experiment: str | None
    trial: str | None
    attempt: int
    resource: str | None
    max_resource: int | None
    resume: bool
    checkpoint_uri: str | None
    standalone: bool
    checkpoint_interval: int | None = None
    checkpoint_from: str | None = None
    checkpoint_from_step: int | None = None
    rank: int = 0
    world_size: int = 1


def _get(name: str) -> str | None:
    # An empty variable is what a templating layer produces for "unset"; treat it so.
    value = os.environ.get(name)
    return value if value else None


def endpoint() -> str | None:
    return _get(ENDPOINT)


def token() -> str | None:
    return _get(TOKEN)


def _int_var(name: str, *, minimum: int) -> int | None:
    raw = _get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        # Tolerate "10.0": runners that template numbers through floats produce it.
        try:
            as_float = float(raw)
        except ValueError:
            as_float = math.nan
        if not as_float.is_integer():
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
        value = int(as_float)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool_var(name: str) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be 1 or 0 (or true/false), got {raw!r}")


def params() -> dict[str, ParamValue]:
    """The trial's parameters, typed as JSON typed them (bool, int, float or str).

    Returns ``{}`` when ``KUBETUNE_PARAMS`` is absent, as for a script run by hand;
    inactive conditional parameters are simply missing, so prefer :func:`param` with a
    default for those.
    """
    raw = _get(PARAMS)
    if raw is None:
        return {}
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{PARAMS} is not valid JSON: {err}") from None
    if not isinstance(decoded, dict):
        raise ValueError(f"{PARAMS} must be a JSON object, got {type(decoded).__name__}")
    for name, value in decoded.items():
        if not isinstance(value, bool | int | float | str):
            raise ValueError(
                f"{PARAMS}: parameter {name!r} must be a bool, number or string, "
                f"got {type(value).__name__}"
            )
    return decoded


def param(name: str, default: ParamValue | None = None) -> ParamValue | None:
    """One parameter, or ``default`` when the trial does not have it."""
    return params().get(name, default)


def trial_info() -> TrialInfo:
    attempt = _int_var(ATTEMPT, minimum=1)
    return TrialInfo(
        experiment=_get(EXPERIMENT),
        trial=_get(TRIAL),
        attempt=1 if attempt is None else attempt,
        resource=_get(RESOURCE),
        max_resource=_int_var(MAX_RESOURCE, minimum=0),
        resume=_bool_var(RESUME),
        checkpoint_uri=_get(CHECKPOINT_URI),
        standalone=endpoint() is None,
        checkpoint_interval=_int_var(CHECKPOINT_INTERVAL, minimum=1),
        checkpoint_from=_get(CHECKPOINT_FROM),
        checkpoint_from_step=_int_var(CHECKPOINT_FROM_STEP, minimum=0),
        rank=_int_var(RANK, minimum=0) or 0,
        world_size=_int_var(WORLD_SIZE, minimum=1) or 1,
    )
