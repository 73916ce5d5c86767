"""Validation and wire encoding of a report's step and metrics (docs/trial-protocol.md).

Kept apart from the HTTP client so the standalone log-line path validates exactly the
same way: a script that works by hand must not start failing under kubetune.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping

METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# The protocol's "at most 64" is the number of metrics in a report. The name length and
# the step's upper bound are not in the protocol; they mirror the server's own limits
# (kubetune.ingest), so a script gets a ValueError here rather than an HTTP 400 there.
MAX_METRICS = 64
MAX_NAME_LENGTH = 128
MAX_STEP = 10**9


def validate_step(step: object) -> int:
    if isinstance(step, bool):
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    try:
        # operator.index accepts numpy integers but refuses floats, so 3.0 is not
        # silently taken for 3 (a fractional step is almost always a bug in the loop).
        value = operator.index(step)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(
            f"step must be a non-negative integer, got {type(step).__name__} {step!r}"
        ) from None
    if value < 0:
        raise ValueError(f"step must be a non-negative integer, got {value}")
    if value > MAX_STEP:
        raise ValueError(f"step must be at most {MAX_STEP}, got {value}")
    return value


def _metric_value(name: str, value: object) -> float:
    # bool is an int to Python but never a metric; str has no __float__ but numpy
    # strings might, so both are refused by type before trying float().
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as err:
        # float() also takes 0-d torch tensors and numpy scalars, which users pass
        # straight from a training loop; anything else lands here.
        raise ValueError(
            f"metric {name!r} must be a number, got {type(value).__name__}: {err}"
        ) from None


def validate_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    if not metrics:
        raise ValueError("report() needs at least one metric, e.g. report(step, loss=0.3)")
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"at most {MAX_METRICS} metrics per report, got {len(metrics)}")
    result: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must match [A-Za-z_][A-Za-z0-9_.]*")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"metric name {name!r} is longer than {MAX_NAME_LENGTH}")
        result[name] = _metric_value(name, value)
    return result


def encode_value(value: float) -> float | str:
    """JSON has no NaN or infinity; the protocol carries them as strings."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def log_line(step_name: str, step: int, metrics: Mapping[str, float]) -> str:
    """The ``name=value ...`` line a runner parses from stdout when there is no endpoint.

    ``repr`` keeps every digit, so a value read back from the log equals the one sent
    over HTTP; ``nan``/``inf`` come out as the protocol's spellings.
    """
    parts = [f"{step_name}={step}"]
    # A metric named like the step would repeat the key and make the line ambiguous.
    parts += [
        f"{name}={encode_value(value)!s}" for name, value in metrics.items() if name != step_name
    ]
    return " ".join(parts)
