"""The search space: which parameters are active, Optuna distributions, grids, templating."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubetune.grid import MAX_GRID_POINTS as MAX_GRID_POINTS  # re-exported: space's API
from kubetune.grid import grid_size as grid_size
from kubetune.grid import is_active as is_active
from kubetune.grid import iter_grid as iter_grid
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
            chosen[parameter.name] = cast(
                Scalar, trial.suggest_categorical(parameter.name, parameter.values)
            )
    return chosen


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
