"""Reports from `name=value` log lines, for trial scripts that do not use the SDK."""

from __future__ import annotations

import math
import re

_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)=(\S+)$")


def parse_metrics_line(
    line: str, resource: str | None, count: int
) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) when the whole line is `name=value` pairs, else None.

    The step is the value of the resource (`epoch=3`) when the line carries it, else
    `count`, the number of such lines so far including this one.
    """
    parts = line.split()
    if not parts:
        return None
    metrics: dict[str, float] = {}
    for part in parts:
        match = _PAIR.match(part)
        if match is None:
            return None
        try:
            metrics[match.group(1)] = float(match.group(2))
        except ValueError:
            return None
    step = count
    if resource is not None and resource in metrics:
        value = metrics.pop(resource)
        if not (math.isfinite(value) and value >= 0 and value.is_integer()):
            return None
        step = int(value)
    return step, metrics
