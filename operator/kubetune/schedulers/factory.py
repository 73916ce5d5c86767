"""Builds the scheduler policy an experiment spec names."""

from __future__ import annotations

from kubetune.schedulers.asha import ASHA
from kubetune.schedulers.base import SchedulerPolicy, rung_resources
from kubetune.schedulers.median import MedianStopping, NoScheduler
from kubetune.schedulers.pbt import PBT
from kubetune.schedulers.sha import Bracket, SuccessiveHalving, hyperband_brackets
from kubetune.spec import ExperimentSpec, SchedulerName


def make_scheduler(spec: ExperimentSpec, max_trials: int | None = None) -> SchedulerPolicy:
    """`max_trials` overrides the budget's: once a finite search space is exhausted, the
    trials that exist are all there will be, and brackets must be sized to them."""
    config = spec.scheduler
    sign = spec.objective.sign()
    if config.name is SchedulerName.NONE:
        return NoScheduler(config.maxResource)
    if config.name is SchedulerName.MEDIAN:
        return MedianStopping(sign, config.minTrials, config.warmupSteps, config.maxResource)
    if config.name is SchedulerName.PBT:
        seed = spec.algorithm.seed
        return PBT(config, sign, spec.parameters, seed, spec.budget.maxTrials)
    assert config.maxResource is not None, "validated by the spec"
    rungs = rung_resources(config.minResource, config.maxResource, config.reductionFactor)
    eta = config.reductionFactor
    max_trials = spec.budget.maxTrials if max_trials is None else max_trials
    if config.name is SchedulerName.ASHA:
        return ASHA(rungs, eta, sign, max_trials)
    if config.name is SchedulerName.SHA:
        return SuccessiveHalving(rungs, eta, sign, [Bracket(0, max_trials, 0, eta)])
    return SuccessiveHalving(rungs, eta, sign, hyperband_brackets(len(rungs), eta, max_trials))
