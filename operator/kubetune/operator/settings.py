"""The operator's tuning knobs read from the environment (KUBETUNE_*_SECONDS), checked
when the operator's modules load, so a bad value stops it at start with one line naming
the variable, never later: "abc" raised a traceback, "inf" meant never, "nan" and
negatives made asyncio sleep zero seconds."""

from __future__ import annotations

import math
import os
import sys

EXIT_USAGE = 2  # as kubetune.cli's: a bad input


def env_seconds(
    name: str, default: float, *, positive: bool = False, at_most: float = math.inf
) -> float:
    """`name`'s value as seconds (finite; > 0 with `positive`, else >= 0; at most
    `at_most`), `default` when unset or empty. A bad value exits with code 2 and one
    line on stderr."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and (value > 0 or (value == 0 and not positive)) and value <= at_most:
        return value
    bound = "> 0" if positive else ">= 0"
    if math.isfinite(at_most):
        bound += f" and <= {at_most:g}"
    print(f"{name}: expected a finite number of seconds {bound}, got {text!r}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
