"""The search space: which parameters are active, Optuna distributions, grids, templating."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.spec import (
    PARAM_REFERENCE,
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Scalar,
    Scale,
)

AnyParameter = FloatParameter | IntParameter | CategoricalParameter
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


def distribution(parameter: AnyParameter) -> BaseDistribution:
    if isinstance(parameter, FloatParameter):
        return FloatDistribution(
            parameter.min, parameter.max, log=parameter.scale is Scale.LOG, step=parameter.step
        )
    if isinstance(parameter, IntParameter):
        return IntDistribution(
            parameter.min, parameter.max, log=parameter.scale is Scale.LOG, step=parameter.step
        )
    return CategoricalDistribution(tuple(parameter.values))


def distributions_for(parameters: Sequence[AnyParameter], params: Mapping[str, Scalar]) -> dict:
    """Optuna distributions of the parameters present in `params` (the active ones)."""
    return {p.name: distribution(p) for p in parameters if p.name in params}


def suggest_params(trial: optuna.Trial, parameters: Sequence[AnyParameter]) -> Params:
    """Ask an Optuna trial for each active parameter, in the spec's order."""
    chosen: Params = {}
    for parameter in parameters:
        if not is_active(parameter, chosen):
            continue
        if isinstance(parameter, FloatParameter):
            chosen[parameter.name] = trial.suggest_float(
                parameter.name,
                parameter.min,
                parameter.max,
                log=parameter.scale is Scale.LOG,
                step=parameter.step,
            )
        elif isinstance(parameter, IntParameter):
            chosen[parameter.name] = trial.suggest_int(
                parameter.name,
                parameter.min,
                parameter.max,
                log=parameter.scale is Scale.LOG,
                step=parameter.step,
            )
        else:
            chosen[parameter.name] = trial.suggest_categorical(parameter.name, parameter.values)
    return chosen


def _grid_values(parameter: AnyParameter) -> list[Scalar]:
    if isinstance(parameter, CategoricalParameter):
        return list(parameter.values)
    if isinstance(parameter, IntParameter):
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


def render(text: str, params: Mapping[str, Scalar]) -> str:
    """Substitute `{{params.NAME}}`; an inactive conditional parameter renders as ''."""

    def value(match: Any) -> str:
        found = params.get(match.group(1))
        return "" if found is None else format_value(found)

    return PARAM_REFERENCE.sub(value, text)


def format_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def env_name(parameter_name: str) -> str:
    return "KUBETUNE_PARAM_" + "".join(c if c.isalnum() else "_" for c in parameter_name).upper()


def params_key(params: Mapping[str, Any]) -> tuple:
    """A hashable identity of a configuration (for grid bookkeeping)."""
    return tuple(sorted((k, type(v).__name__, v) for k, v in params.items()))
