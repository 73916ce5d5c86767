"""The state metrics: experiments and trials by phase, best value, budgets,
interruptions, the last progress, read from the live engines at scrape time
(`StateCollector`, registered by `metrics.Metrics`). No bookkeeping to drift: the
numbers are the engine's, right again at once after a restart."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubetune.engine import Engine
from kubetune.shell.core import experiment_phase

if TYPE_CHECKING:
    from kubetune.observability.metrics import Metrics

EXPERIMENT_PHASES = ("Running", "Succeeded", "Failed")
EXPERIMENT = ("namespace", "experiment")


@dataclass(frozen=True)
class ExperimentView:
    """One experiment as a source shows it: where it lives and its engine."""

    namespace: str
    name: str
    engine: Engine


Source = Callable[[], Iterable[ExperimentView]]


def last_progress(engine: Engine) -> float | None:
    """When a trial last reported, started or ended; the start if none has yet."""
    return engine.last_progress_at if engine.last_progress_at is not None else engine.started_at


class StateCollector(Collector):
    """Gauges and counters read from the engines of every registered source."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        families: list[GaugeMetricFamily | CounterMetricFamily] = [
            gauge("kubetune_experiments", "Experiments by phase.", labels=["namespace", "phase"]),
            gauge(
                "kubetune_experiment_phase",
                "1 for the phase the experiment is in, 0 for the others.",
                labels=[*EXPERIMENT, "phase"],
            ),
            gauge(
                "kubetune_experiment_info",
                "Always 1: what the experiment optimizes and how.",
                labels=[
                    *EXPERIMENT,
                    "objective",
                    "goal",
                    "algorithm",
                    "scheduler",
                    "resource",
                    "node_pool",
                ],
            ),
            gauge("kubetune_trials", "Trials by phase.", labels=[*EXPERIMENT, "phase"]),
            gauge(
                "kubetune_experiment_best_objective_value",
                "Objective value of the best trial so far (the one trained furthest).",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_start_time_seconds",
                "When the experiment started, in seconds since the epoch.",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_last_progress_time_seconds",
                "When a trial of the experiment last reported, started or ended, "
                "in seconds since the epoch.",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_max_trials",
                "The trial budget (spec.budget.maxTrials).",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_parallel_trials",
                "Trials run at once at most (spec.budget.parallelTrials).",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_max_cost_usd",
                "The cost budget in US dollars (spec.budget.maxCostUSD), when set.",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_max_duration_seconds",
                "The wall-clock budget (spec.budget.maxDuration), when set.",
                labels=list(EXPERIMENT),
            ),
            gauge(
                "kubetune_experiment_cost_usd",
                "What the experiment's trials have cost so far, in US dollars.",
                labels=list(EXPERIMENT),
            ),
            counter(
                "kubetune_trial_interruptions",
                "Trial attempts lost through no fault of their own (spot reclaims, "
                "evictions, node shutdowns), from the experiment's whole history.",
                labels=list(EXPERIMENT),
            ),
        ]
        return {family.name: family for family in families}

    def collect(self) -> Iterator[Metric]:
        families = self._families()

        def add(name: str, labels: list[str], value: float) -> None:
            families[name].add_metric(labels, value)

        by_namespace: dict[str, dict[str, int]] = {}
        costs = self.metrics.costs()
        for view in self.metrics.views():
            engine, spec = view.engine, view.engine.spec
            key = [view.namespace, view.name]
            phase = experiment_phase(engine)
            counts = by_namespace.setdefault(view.namespace, dict.fromkeys(EXPERIMENT_PHASES, 0))
            counts[phase] += 1
            for each in EXPERIMENT_PHASES:
                add("kubetune_experiment_phase", [*key, each], float(each == phase))
            add(
                "kubetune_experiment_info",
                [
                    *key,
                    spec.objective.metric,
                    spec.objective.goal.value,
                    spec.algorithm.name.value,
                    spec.scheduler.name.value,
                    spec.scheduler.resource or "",
                    spec.capacity.nodePool if spec.capacity else "",
                ],
                1.0,
            )
            for trial_phase, count in engine.counts().items():
                add("kubetune_trials", [*key, trial_phase], count)
            best = engine.best()
            if best is not None and math.isfinite(best.value):
                add("kubetune_experiment_best_objective_value", key, best.value)
            if engine.started_at is not None:
                add("kubetune_experiment_start_time_seconds", key, engine.started_at)
            progress = last_progress(engine)
            if progress is not None:
                add("kubetune_experiment_last_progress_time_seconds", key, progress)
            budget = spec.budget
            add("kubetune_experiment_max_trials", key, budget.maxTrials)
            add("kubetune_experiment_parallel_trials", key, budget.parallelTrials)
            if budget.maxCostUSD is not None:
                add("kubetune_experiment_max_cost_usd", key, budget.maxCostUSD)
            duration = budget.max_duration_seconds()
            if duration is not None:
                add("kubetune_experiment_max_duration_seconds", key, duration)
            interruptions = sum(t.interruptions for t in engine.trials)
            add("kubetune_trial_interruptions", key, interruptions)
            # The capacity manager's latest measure (observe_cost), else what the engine
            # recorded for its cost budget (coarser: it records 1% steps of the budget).
            if (view.namespace, view.name) not in costs and budget.maxCostUSD is not None:
                costs[(view.namespace, view.name)] = engine.cost_usd
        for namespace, counts in sorted(by_namespace.items()):
            for phase, count in counts.items():
                add("kubetune_experiments", [namespace, phase], count)
        for (namespace, name), usd in sorted(costs.items()):
            add("kubetune_experiment_cost_usd", [namespace, name], usd)
        yield from families.values()
