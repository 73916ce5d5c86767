"""Grid arithmetic over a spec's parameters: which are active, every combination, the size.

Both spec.py (it refuses a grid over MAX_GRID_POINTS) and space.py (it enumerates the
grid for the sampler) need this, so it lives below both and imports neither at run time:
parameters are told apart by their `type` field, not by class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from kubetune.spec import CategoricalParameter, FloatParameter, IntParameter

AnyParameter = Union["FloatParameter", "IntParameter", "CategoricalParameter"]
Scalar = bool | int | float | str
Params = dict[str, Scalar]

# A grid larger than this is refused: nobody means to run it, and enumerating it costs memory.
MAX_GRID_POINTS = 100_000


def is_active(parameter: AnyParameter, chosen: Mapping[str, Scalar]) -> bool:
    """A conditional parameter is active when every parent it names has a matching value."""
    for parent, expected in (parameter.when or {}).items():
        if parent not in chosen:
            return False
        options = expected if isinstance(expected, list) else [expected]
        value = chosen[parent]
        if not any(_same_value(value, option) for option in options):
            return False
    return True


def _same_value(value: Scalar, option: Scalar) -> bool:
    # True is not 1 and "1" is not 1, but a float parameter's 1.0 is the condition's 1 (the
    # spec accepts `when: {x: 1}` for a float x, and YAML writes whole numbers as ints).
    numbers = (int, float)
    if (
        isinstance(value, numbers)
        and isinstance(option, numbers)
        and not isinstance(value, bool)
        and not isinstance(option, bool)
    ):
        return value == option
    return type(value) is type(option) and value == option


def _grid_values(parameter: AnyParameter) -> list[Scalar]:
    if parameter.type == "categorical":
        return list(parameter.values)
    if parameter.type == "int":
        return list(range(parameter.min, parameter.max + 1, parameter.step))
    assert parameter.step is not None, "validated: grid floats have a step"
    count = math.floor((parameter.max - parameter.min) / parameter.step + 1e-9) + 1
    return [round(parameter.min + i * parameter.step, 12) for i in range(count)]


def grid_size(parameters: Sequence[AnyParameter]) -> int:
    """Number of grid points, counting each conditional branch once; stops past the cap."""
    count = 0
    for _ in itertools.islice(iter_grid(parameters), MAX_GRID_POINTS + 1):
        count += 1
    return count


def iter_grid(parameters: Sequence[AnyParameter]) -> Iterator[Params]:
    """Every valid combination, expanding only the branches whose conditions hold."""

    def expand(index: int, chosen: Params) -> Iterator[Params]:
        if index == len(parameters):
            yield dict(chosen)
            return
        parameter = parameters[index]
        if not is_active(parameter, chosen):
            yield from expand(index + 1, chosen)
            return
        for value in _grid_values(parameter):
            chosen[parameter.name] = value
            yield from expand(index + 1, chosen)
        del chosen[parameter.name]

    yield from expand(0, {})
