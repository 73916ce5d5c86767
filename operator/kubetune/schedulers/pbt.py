"""Population-based training (Jaderberg et al., "Population Based Training of Neural
Networks", 2017), decided asynchronously and written down before it is carried out.

The population is `budget.parallelTrials` members, drawn by the experiment's algorithm.
Each member is ranked every `interval` steps *it reported* (never by wall time), against
the latest value every other member reported at an interval step at or before that step:
a slow or interrupted member blocks no one. A member in the bottom `quantile` is replaced:
the engine plans a new trial (a `TrialExploited` event, in the history before any process
or pod exists) that starts from the checkpoint a member of the top quantile saved at an
exact step, pinned by (trial, step), with that member's parameters explored. A member
that is not replaced keeps running in the same process or pod.

Everything here is a pure function of the trials and the spec; the random choices come
from a generator seeded with the experiment's seed and the decision's identity (trial
number and step), so the same history gives the same decisions.

Checkpoint contract (the SDK's `checkpoint_due`): a member saves its checkpoint at every
multiple of `interval` *before* it reports that step, so a report at an interval step
proves the checkpoint there exists.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.schedulers.ladders import RungLadders
from kubetune.schedulers.median import NoScheduler
from kubetune.spec import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Scale,
    Scheduler,
)
from kubetune.trials import TrialPhase, TrialRecord

Parameter = FloatParameter | IntParameter | CategoricalParameter


@dataclass(frozen=True)
class Exploit:
    """Replace the reporting member by a new trial from `donor`'s checkpoint at `from_step`."""

    donor: int
    from_step: int
    params: dict[str, Any]


@dataclass(frozen=True)
class ScheduleEntry:
    """From step `from_step` on, trial `trial` trained with `params`."""

    trial: int
    from_step: int
    params: Mapping[str, Any]


class PBT(NoScheduler):
    """Members run to maxResource (NoScheduler's rules); exploits are decided apart."""

    def __init__(
        self,
        config: Scheduler,
        sign: float,
        parameters: Sequence[Parameter],
        seed: int,
        max_trials: int,
    ) -> None:
        assert config.interval is not None and config.maxResource is not None, "validated"
        self.interval = config.interval
        self.max_resource: int | None = config.maxResource
        self.quantile = config.quantile
        self.resample_probability = config.resampleProbability
        self.factors = list(config.perturbationFactors)
        self.sign = sign
        self.parameters = list(parameters)
        self.seed = seed
        self.max_trials = max_trials

    # ----- SchedulerPolicy: NoScheduler's (run to maxResource), but for what is kept ----

    def must_keep(self, step: int) -> bool:
        return step % self.interval == 0  # members are ranked by their interval reports

    def most_promotions(
        self, trials: Sequence[TrialRecord], ladders: RungLadders, holders: Sequence[TrialRecord]
    ) -> int | None:
        return None  # exploits start members outside promotions and maxTrials' count

    # ----- exploit and explore ---------------------------------------------------------

    def exploit(
        self, trial: TrialRecord, step: int, value: float, trials: Sequence[TrialRecord]
    ) -> Exploit | None:
        """Whether the member reporting `value` at `step` is replaced, and by what."""
        assert self.max_resource is not None
        if step % self.interval or step >= self.max_resource or len(trials) >= self.max_trials:
            return None
        if trial.from_step is not None and step <= trial.from_step:
            return None
        ranked: list[tuple[float, int, int]] = []  # (signed value, number, checkpoint step)
        for member in members(trials):
            if member.number == trial.number:
                ranked.append((self.sign * value, member.number, step))
                continue
            found = checkpointed_value(member, step, self.interval)
            if found is not None:
                ranked.append((self.sign * found[1], member.number, found[0]))
        ranked.sort()
        count = quantile_count(len(ranked), self.quantile)
        bottom = {number for _, number, _ in ranked[len(ranked) - count :]} if count else set()
        if trial.number not in bottom:
            return None
        rng = decision_rng(self.seed, trial.number, step)
        _, donor, from_step = rng.choice(ranked[:count])
        params = explore(
            trials[donor].params,
            self.parameters,
            rng,
            self.factors,
            self.resample_probability,
        )
        return Exploit(donor, from_step, params)


def members(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The population now: trials not replaced and not failed, with parameters."""
    return [
        t
        for t in trials
        if t.replaced_by is None
        and t.phase is not TrialPhase.FAILED
        and t.phase is not TrialPhase.SAMPLING
        and not (t.phase is TrialPhase.STOPPED and t.reason.startswith(EXPLOITED))
    ]


EXPLOITED = "exploited"


def checkpointed_value(trial: TrialRecord, step: int, interval: int) -> tuple[int, float] | None:
    """The member's latest (step, value) at an interval step at or before `step` that it
    trained itself (after the step it started from): where its checkpoint is."""
    start = trial.from_step or 0
    steps = [s for s in trial.values if s <= step and s > start and s % interval == 0]
    if not steps:
        return None
    last = max(steps)
    return last, trial.values[last]


def quantile_count(size: int, quantile: float) -> int:
    """How many members the top (and the bottom) quantile holds: ⌈size·q⌉, at most half
    the population (Ray Tune's rule), none in a population of one."""
    count = math.ceil(size * quantile)
    return min(count, size // 2)


def decision_rng(seed: int, number: int, step: int) -> random.Random:
    """A generator for one decision: the same seed, trial and step give the same draws
    however often the history is replayed, and whatever was decided before."""
    return random.Random(f"kubetune-pbt/{seed}/{number}/{step}")


def explore(
    params: Mapping[str, Any],
    parameters: Sequence[Parameter],
    rng: random.Random,
    factors: Sequence[float],
    resample_probability: float,
) -> dict[str, Any]:
    """The donor's parameters, each perturbed (or, with `resample_probability`, drawn
    anew from its prior), clamped to its range and kept on its scale and grid."""
    out = dict(params)
    for parameter in parameters:
        if parameter.name not in params:
            continue
        if rng.random() < resample_probability:
            out[parameter.name] = sample_prior(parameter, rng)
        else:
            out[parameter.name] = perturb(parameter, params[parameter.name], rng, factors)
    return out


def sample_prior(parameter: Parameter, rng: random.Random) -> Any:
    if isinstance(parameter, CategoricalParameter):
        return rng.choice(parameter.values)
    if parameter.scale is Scale.LOG:
        value = math.exp(rng.uniform(math.log(parameter.min), math.log(parameter.max)))
    else:
        value = rng.uniform(parameter.min, parameter.max)
    return _fit(parameter, value)


def perturb(parameter: Parameter, value: Any, rng: random.Random, factors: Sequence[float]) -> Any:
    if isinstance(parameter, CategoricalParameter):
        index = next(
            (i for i, v in enumerate(parameter.values) if type(v) is type(value) and v == value),
            0,
        )
        last = len(parameter.values) - 1
        if last == 0:
            return parameter.values[0]
        move = rng.choice((-1, 1))
        if not 0 <= index + move <= last:
            move = -move  # at an end: the only neighbour
        return parameter.values[index + move]
    factor = rng.choice(list(factors))
    moved = _fit(parameter, float(value) * factor)
    if isinstance(parameter, IntParameter) and moved == value and factor != 1:
        # Rounding undid the move (2 * 1.2 is 2): take one grid step the factor's way.
        step = parameter.step if factor > 1 else -parameter.step
        moved = _fit(parameter, float(value) + step)
    return moved


def _fit(parameter: FloatParameter | IntParameter, value: float) -> float | int:
    """Clamped to [min, max] and snapped to the parameter's grid (ints, float steps)."""
    value = min(max(value, parameter.min), parameter.max)
    if isinstance(parameter, IntParameter):
        steps = round((value - parameter.min) / parameter.step)
        snapped = parameter.min + steps * parameter.step
        while snapped > parameter.max:
            snapped -= parameter.step
        return int(snapped)
    if parameter.step is not None:
        steps = round((value - parameter.min) / parameter.step)
        value = min(parameter.min + steps * parameter.step, parameter.max)
    return float(value)


def schedule(trials: Sequence[TrialRecord], number: int) -> list[ScheduleEntry]:
    """The hyperparameter schedule that trained trial `number`: its ancestors' parameters,
    each from the step its line started from, oldest first."""
    entries: list[ScheduleEntry] = []
    current: int | None = number
    while current is not None:
        trial = trials[current]
        entries.append(ScheduleEntry(trial.number, trial.from_step or 0, dict(trial.params)))
        current = trial.parent
    return entries[::-1]


def generation(trials: Sequence[TrialRecord], number: int) -> int:
    """How many exploits lie between trial `number` and the initial population."""
    return len(schedule(trials, number)) - 1


def pinned_checkpoints(trials: Sequence[TrialRecord]) -> set[tuple[int, int]]:
    """(trial, step) of every checkpoint a member that has not ended may still load: its
    parent's at the step it started from (a member interrupted before its own first
    checkpoint starts from there again). None of these may be deleted."""
    return {
        (t.parent, t.from_step)
        for t in trials
        if t.parent is not None and t.from_step is not None and not t.phase.is_final
    }


def lineage_document(trials: Sequence[TrialRecord], number: int) -> dict[str, Any]:
    """A trial's lineage as results and statuses show it (camelCase keys)."""
    trial = trials[number]
    return {
        "parent": None if trial.parent is None else trials[trial.parent].name,
        "fromStep": trial.from_step,
        "generation": generation(trials, number),
        "replacedBy": None if trial.replaced_by is None else trials[trial.replaced_by].name,
    }


def schedule_document(trials: Sequence[TrialRecord], number: int) -> list[dict[str, Any]]:
    """The hyperparameter schedule that trained trial `number`, to retrain with: from each
    `fromStep` on, `params` (trained by `trial`)."""
    return [
        {"fromStep": e.from_step, "trial": trials[e.trial].name, "params": dict(e.params)}
        for e in schedule(trials, number)
    ]


def add_lineage(document: dict[str, Any], trials: Sequence[TrialRecord], best: int | None) -> None:
    """Add each trial's lineage, and the best trial's whole schedule, to a results
    document (`kubetune run --output`) whose `trials` follow `trials`' order."""
    for number, entry in enumerate(document["trials"]):
        entry.update(lineage_document(trials, number))
    if best is not None and document.get("best") is not None:
        document["best"]["schedule"] = schedule_document(trials, best)


def launch_lineage(trial: TrialRecord) -> tuple[str | None, int | None]:
    """(parent's name, step) of the checkpoint a trial made by an exploit starts from, for
    a launch rebuilt from the record (trial names are `<experiment>-<number>`)."""
    if trial.parent is None or trial.from_step is None:
        return None, None
    prefix = trial.name[: len(trial.name) - len(str(trial.number))]
    return f"{prefix}{trial.parent}", trial.from_step
