"""Warm start (`spec.warmStart`): earlier experiments' completed trials, mapped onto this
experiment's search space. Pure: the shells read the earlier experiments once, when the
experiment starts (`kubetune.local.parents`, `kubetune.operator.parents`), hand them to
`warm_start`, and record the `WarmStarted` event it returns; replay reads the trials from
that event, never from the earlier experiments again (they may be gone or have changed).

Mapping rules. A trial maps whole or is left out; each left out is counted by reason.

* Candidates are an earlier experiment's trials that completed with a finite objective
  value (stopped, paused and failed trials are not candidates, and not counted). Only
  the experiment's own trials: the warm-start trials it had itself are not passed on.
* The objective must be the same: the same metric and goal, else `WarmStartError` names
  the field (the values could not be compared). The values are taken as they are.
* Parameters are matched by name, in this experiment's order, each judged active or not
  by its `when` conditions on the values mapped before it:
  - active here, and the earlier trial has no value for it (a parameter added since, or
    one that was inactive there): the trial is left out. There is no default to fill it
    with (the spec has none), and a made-up value would be an observation where nothing
    was measured. Optuna's GP and CMA-ES model only the parameters every completed trial
    has: one trial without it would drop it from the model for every later suggestion.
  - a value outside the new range (float, int), not an integer for an int parameter,
    off the grid of a `step`, or a categorical choice no longer listed (or of another
    type: `1` is not `"1"`): the trial is left out. Values are not clamped to the new
    bounds: that too would place an observation where nothing was measured.
  - parameters that no longer exist, or that are inactive here: their values are dropped
    and the trial is kept.
* At most `MAX_PRIOR_TRIALS` trials and about `MAX_PRIOR_BYTES` of JSON are kept, the best
  first (they live in one history record of the experiment object); the rest are left out.

What the shells and the engine do with them: `transfer` gives them to the sampler as
completed trials that came before this experiment's own (TPE, GP and CMA-ES model them,
and they count toward the start-up trials, so a warm experiment skips its random start;
CMA-ES also starts its mean and covariance from them, Optuna's `source_trials`); they are
not this experiment's trials: not in its best, its counts or `maxTrials`. `reuse` also
counts them toward the best (a target reached by one ends the experiment at once);
`maxTrials` still counts new trials only. Random and sobol learn nothing from them; grid
skips the points they evaluated with `reuse` only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import optuna

from kubetune.events import PriorTrial, WarmStarted
from kubetune.space import AnyParameter, Params, distributions_for, is_active
from kubetune.spec import (
    CategoricalParameter,
    ExperimentSpec,
    FloatParameter,
    IntParameter,
    Objective,
    Scalar,
)
from kubetune.trials import TrialPhase, TrialRecord

# The record lives in the experiment's status.history, which every status write sends
# whole: a bound in bytes keeps those writes small. Past a few hundred trials the GP hands
# over to TPE anyway (algorithm.gpMaxTrials).
MAX_PRIOR_TRIALS = 500
MAX_PRIOR_BYTES = 128 * 1024
RECORD_ROOM = 8 * 1024  # the record's other fields (parents, reasons, its MAC)
# Reasons are kept per parameter; past this many distinct ones the rest are lumped
# together (the status shows them, bounded by the CRD).
MAX_REASONS = 32
OTHER_REASONS = "other reasons"
BEYOND_BOUND = f"beyond the {MAX_PRIOR_TRIALS} best (or {MAX_PRIOR_BYTES // 1024} KiB)"


class WarmStartError(ValueError):
    """spec.warmStart cannot be done: `path` names the field, `reason` says why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ParentExperiment:
    """What the shells read of one earlier experiment."""

    name: str
    objective: Objective
    trials: Sequence[PriorTrial]  # its completed trials, with their values


def completed_trials(name: str, trials: Iterable[TrialRecord]) -> list[PriorTrial]:
    """An earlier experiment's candidates: its trials that completed with a finite value."""
    return [
        PriorTrial(name, t.name, dict(t.params), t.value)
        for t in trials
        if t.phase is TrialPhase.COMPLETED and t.value is not None and math.isfinite(t.value)
    ]


def check_objective(spec: ExperimentSpec, index: int, parent: ParentExperiment) -> None:
    mine, theirs = spec.objective, parent.objective
    if (mine.metric, mine.goal) != (theirs.metric, theirs.goal):
        raise WarmStartError(
            f"spec.warmStart.experiments[{index}]",
            f"{parent.name} optimizes {theirs.metric} ({theirs.goal.value}), this experiment "
            f"{mine.metric} ({mine.goal.value}): the objective must be the same",
        )


def map_params(parameters: Sequence[AnyParameter], params: Params) -> Params | str:
    """`params` of an earlier trial on this space, or the reason it cannot be mapped."""
    mapped: Params = {}
    for parameter in parameters:
        if not is_active(parameter, mapped):
            continue  # inactive here: its value, if any, is dropped
        if parameter.name not in params:
            return f"missing parameter {parameter.name}"
        value = _fit(parameter, params[parameter.name])
        if value is None:
            return _misfit(parameter)
        mapped[parameter.name] = value
    # Optuna's own check of every value against its distribution: what it would refuse
    # when the study is built must not be stored.
    try:
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=0.0,
            params=dict(mapped),
            distributions=distributions_for(parameters, mapped),
        )
    except ValueError:
        return "not a point of this space"
    return mapped


def _fit(parameter: AnyParameter, value: Scalar) -> Scalar | None:
    if isinstance(parameter, CategoricalParameter):
        same = [v for v in parameter.values if type(v) is type(value) and v == value]
        return same[0] if same else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # An int is exact (a float of it may overflow: a hand-edited state); a float must be
    # finite.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not parameter.min <= value <= parameter.max:
        return None
    if isinstance(parameter, IntParameter):
        if not float(value).is_integer():
            return None
        number = int(value)
        return number if (number - parameter.min) % parameter.step == 0 else None
    assert isinstance(parameter, FloatParameter)
    if parameter.step is not None:
        k = (value - parameter.min) / parameter.step
        if abs(k - round(k)) > 1e-8:
            return None
    return float(value)


def _misfit(parameter: AnyParameter) -> str:
    if isinstance(parameter, CategoricalParameter):
        return f"{parameter.name}: a choice no longer listed"
    if isinstance(parameter, FloatParameter) and parameter.step is None:
        return f"{parameter.name}: outside [{parameter.min:g}, {parameter.max:g}]"
    return f"{parameter.name}: outside [{parameter.min:g}, {parameter.max:g}] or off its grid"


def warm_start(
    spec: ExperimentSpec, parents: Sequence[ParentExperiment], now: float
) -> WarmStarted:
    """The record of spec.warmStart: every parent's trials mapped, or WarmStartError."""
    warm = spec.warmStart
    assert warm is not None, "warm_start needs spec.warmStart"
    kept: list[PriorTrial] = []
    left_out: Counter[str] = Counter()
    for index, parent in enumerate(parents):
        check_objective(spec, index, parent)
        for trial in parent.trials:
            if not math.isfinite(trial.value):
                continue
            mapped = map_params(spec.parameters, trial.params)
            if isinstance(mapped, str):
                left_out[mapped] += 1
            else:
                kept.append(PriorTrial(parent.name, trial.trial, mapped, trial.value))
    kept, beyond = _bounded(kept, spec.objective.sign())
    if beyond:
        left_out[BEYOND_BOUND] += beyond
    return WarmStarted(
        warm_mode=warm.mode.value,
        parents=[p.name for p in parents],
        at=now,
        prior_trials=tuple(kept),
        left_out=_lumped(left_out),
    )


def _bounded(trials: list[PriorTrial], sign: float) -> tuple[list[PriorTrial], int]:
    """The best trials that fit MAX_PRIOR_TRIALS and MAX_PRIOR_BYTES, in their own order."""
    ranked = sorted(range(len(trials)), key=lambda i: (sign * trials[i].value, i))
    chosen: set[int] = set()
    size = 0
    for index in ranked[:MAX_PRIOR_TRIALS]:
        trial = trials[index]
        size += len(json.dumps(dataclasses.asdict(trial))) + 2
        if size > MAX_PRIOR_BYTES - RECORD_ROOM:
            break
        chosen.add(index)
    return [t for i, t in enumerate(trials) if i in chosen], len(trials) - len(chosen)


def _lumped(reasons: Counter[str]) -> dict[str, int]:
    common = reasons.most_common()
    out = dict(common[:MAX_REASONS])
    rest = sum(count for _, count in common[MAX_REASONS:])
    if rest:
        out[OTHER_REASONS] = out.get(OTHER_REASONS, 0) + rest
    return out


def summary(event: WarmStarted | None) -> dict[str, object] | None:
    """What results and the experiment's status show of it."""
    if event is None:
        return None
    return {
        "mode": event.warm_mode,
        "experiments": list(event.parents),
        "loaded": len(event.prior_trials),
        "leftOut": sum(event.left_out.values()),
        "reasons": dict(event.left_out),
    }


def describe(event: WarmStarted) -> str:
    """One line for people: the run's note, the operator's Event."""
    reasons = ", ".join(f"{count} {why}" for why, count in event.left_out.items())
    return (
        f"warm start ({event.warm_mode}): {len(event.prior_trials)} earlier trials loaded "
        f"from {', '.join(event.parents)}, {sum(event.left_out.values())} left out"
        + (f" ({reasons})" if reasons else "")
    )
