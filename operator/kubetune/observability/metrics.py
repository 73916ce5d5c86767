"""kubetune's Prometheus metrics (prometheus-client), in a registry of their own.

Two kinds, on purpose:

* **State** (experiments and trials by phase, best value, budgets, interruptions, the
  last progress) is read from the live engines at scrape time by
  `state.StateCollector`.
  There is no bookkeeping to drift: the numbers are the engine's, the same ones the
  operator writes to the HPOExperiment status, and they are right again at once after
  a restart (the engine is rebuilt from the stored history).
* **Events** (reports, decisions, latencies, trial ends, reconcile errors) are plain
  counters and histograms, counted by this process from the moment it started, which
  is what `rate()` and `increase()` expect.

Labels are bounded: at most namespace and experiment, never a trial. Node pool metrics
are labelled by pool. An experiment's labelled children are dropped with `forget`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from kubetune import __version__
from kubetune.observability.state import EXPERIMENT, ExperimentView, Source, StateCollector
from kubetune.observability.transitions import Change, Transition
from kubetune.trials import TrialPhase

__all__ = ["ExperimentView", "Metrics", "Source"]

FINAL_TRIAL_PHASES = tuple(p.value for p in TrialPhase if p.is_final)
DECISIONS = ("continue", "pause", "stop")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (
    0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400,
)  # fmt: skip
# Powers of the default reduction factor (rungs 1, 3, 9, 27, ...) and of ten.
RESOURCE_BUCKETS = (1, 3, 9, 10, 27, 81, 100, 243, 729, 1000, 2187, 6561, 10000, 100000)


class Metrics:
    """Every kubetune metric, in one dedicated `CollectorRegistry`.

    Each `observability.Observer` has one (a process has one Observer); tests make
    their own.
    """

    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._sources: list[Source] = []
        self._costs: dict[tuple[str, str], float] = {}
        registry = self.registry
        if process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        self.build_info = Gauge(
            "kubetune_build_info", "Always 1: the kubetune version.", ["version"], registry=registry
        )
        self.build_info.labels(__version__).set(1)

        # The trial protocol: counted in the report endpoint.
        self.reports_received = Counter(
            "kubetune_reports_received",
            "Trial reports accepted (authenticated and well-formed) and answered.",
            EXPERIMENT,
            registry=registry,
        )
        self.reports_refused = Counter(
            "kubetune_reports_refused",
            "Trial reports refused, by HTTP status code (401, 400, 403, 404, 409, 413).",
            ["code"],
            registry=registry,
        )
        self.decisions = Counter(
            "kubetune_decisions",
            "Decisions answered to trial reports, by kind: continue, pause or stop.",
            [*EXPERIMENT, "decision"],
            registry=registry,
        )
        self.decision_latency = Histogram(
            "kubetune_report_decision_latency_seconds",
            "Time from an accepted report to its decision, stored durably first "
            "(the report endpoint's handler).",
            EXPERIMENT,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        # Trials: observed when they change, by the shells' persist step.
        self.trial_duration = Histogram(
            "kubetune_trial_duration_seconds",
            "Time a trial ran, summed over its attempts (time paused excluded), "
            "observed when it ends, by final phase.",
            [*EXPERIMENT, "phase"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.trial_resource = Histogram(
            "kubetune_trial_resource_steps",
            "Resource steps (the unit of spec.scheduler.resource: epochs, batches, ...) a "
            "trial trained, resumes included, observed when it ends, by final phase.",
            [*EXPERIMENT, "phase"],
            buckets=RESOURCE_BUCKETS,
            registry=registry,
        )
        self.trials_ended = Counter(
            "kubetune_trials_ended",
            "Trials that reached a final phase: Completed, Stopped or Failed.",
            [*EXPERIMENT, "phase"],
            registry=registry,
        )
        self.promotions = Counter(
            "kubetune_trial_promotions",
            "Paused trials promoted to the next rung (they resume from their checkpoint).",
            EXPERIMENT,
            registry=registry,
        )

        # The operator itself.
        self.reconcile_errors = Counter(
            "kubetune_reconcile_errors",
            "Errors while reconciling, by where (resync, experiment, pod, sampling) and "
            "by exception type.",
            ["handler", "error"],
            registry=registry,
        )
        self.history_refused = Counter(
            "kubetune_history_records_refused",
            "Stored history records refused when an experiment was loaded: no valid MAC "
            "under the operator's key (written by someone else), never replayed.",
            EXPERIMENT,
            registry=registry,
        )
        self.history_missing = Counter(
            "kubetune_history_records_missing",
            "Stored history records found missing when an experiment was loaded (a gap "
            "in sequence numbers that compaction does not explain): deleted by someone.",
            EXPERIMENT,
            registry=registry,
        )
        self.objects_restored = Counter(
            "kubetune_objects_restored",
            "kubetune's own objects put back from the operator's state, by kind and what "
            "happened to them (deleted, status: written by someone else).",
            ["kind", "what"],
            registry=registry,
        )

        # Node pools: set by the capacity manager (`observe_node_pool`).
        self.pool_desired = Gauge(
            "kubetune_node_pool_desired_nodes",
            "Nodes the operator wants in the pool.",
            ["pool"],
            registry=registry,
        )
        self.pool_current = Gauge(
            "kubetune_node_pool_current_nodes",
            "Nodes the pool has now.",
            ["pool"],
            registry=registry,
        )
        self.pool_max = Gauge(
            "kubetune_node_pool_max_nodes",
            "The most nodes the pool may have.",
            ["pool"],
            registry=registry,
        )
        self.pool_pending = Gauge(
            "kubetune_node_pool_pending_pods",
            "Trial pods waiting for a node of the pool.",
            ["pool"],
            registry=registry,
        )
        self.pool_interruptions = Counter(
            "kubetune_node_pool_interruptions",
            "Nodes of the pool taken away (spot reclaims).",
            ["pool"],
            registry=registry,
        )
        self.registry.register(StateCollector(self))

    # ----- state sources ----------------------------------------------------------------

    def add_source(self, source: Source) -> Callable[[], None]:
        """Read `source` at each scrape; the returned function stops that."""
        with self._lock:
            self._sources.append(source)

        def remove() -> None:
            with self._lock:
                if source in self._sources:
                    self._sources.remove(source)

        return remove

    def views(self) -> list[ExperimentView]:
        with self._lock:
            sources = list(self._sources)
        return [view for source in sources for view in source()]

    def costs(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._costs)

    # ----- what shells and the capacity manager tell -------------------------------------

    def start_experiment(self, namespace: str, experiment: str) -> None:
        """Create an experiment's counters at zero, so `increase()` sees the first one."""
        self.reports_received.labels(namespace, experiment)
        self.promotions.labels(namespace, experiment)
        for decision in DECISIONS:
            self.decisions.labels(namespace, experiment, decision)
        for phase in FINAL_TRIAL_PHASES:
            self.trials_ended.labels(namespace, experiment, phase)

    def report_answered(
        self, namespace: str, experiment: str, decision: str, seconds: float
    ) -> None:
        self.reports_received.labels(namespace, experiment).inc()
        self.decisions.labels(namespace, experiment, decision).inc()
        self.decision_latency.labels(namespace, experiment).observe(seconds)

    def report_refused(self, code: int) -> None:
        self.reports_refused.labels(str(code)).inc()

    def transitions(self, namespace: str, experiment: str, changes: Iterable[Transition]) -> None:
        for change in changes:
            if change.change is Change.PROMOTED:
                self.promotions.labels(namespace, experiment).inc()
            elif change.change is Change.ENDED:
                phase = change.phase.value
                self.trials_ended.labels(namespace, experiment, phase).inc()
                labels = (namespace, experiment, phase)
                self.trial_duration.labels(*labels).observe(change.duration_seconds)
                self.trial_resource.labels(*labels).observe(change.trial.resource)

    def reconcile_error(self, handler: str, error: BaseException) -> None:
        self.reconcile_errors.labels(handler, type(error).__name__).inc()

    def history_records_refused(self, namespace: str, experiment: str, count: int) -> None:
        self.history_refused.labels(namespace, experiment).inc(count)

    def history_records_missing(self, namespace: str, experiment: str, count: int) -> None:
        self.history_missing.labels(namespace, experiment).inc(count)

    def object_restored(self, kind: str, what: str) -> None:
        self.objects_restored.labels(kind, what).inc()

    def observe_node_pool(
        self,
        pool: str,
        desired: int,
        current: int,
        maximum: int | None = None,
        pending_pods: int | None = None,
    ) -> None:
        self.pool_desired.labels(pool).set(desired)
        self.pool_current.labels(pool).set(current)
        if maximum is not None:
            self.pool_max.labels(pool).set(maximum)
        if pending_pods is not None:
            self.pool_pending.labels(pool).set(pending_pods)

    def observe_spot_interruption(self, pool: str, count: int = 1) -> None:
        self.pool_interruptions.labels(pool).inc(count)

    def forget_node_pool(self, pool: str) -> None:
        for metric in (self.pool_desired, self.pool_current, self.pool_max, self.pool_pending):
            _remove(metric, pool)

    def observe_cost(self, namespace: str, experiment: str, usd: float) -> None:
        with self._lock:
            self._costs[(namespace, experiment)] = float(usd)

    def forget(self, namespace: str, experiment: str) -> None:
        """Drop a deleted experiment's series."""
        with self._lock:
            self._costs.pop((namespace, experiment), None)
        experiment_series = (self.reports_received, self.promotions, self.decision_latency)
        for metric in (*experiment_series, self.history_refused):
            _remove(metric, namespace, experiment)
        for decision in DECISIONS:
            _remove(self.decisions, namespace, experiment, decision)
        for phase in FINAL_TRIAL_PHASES:
            for metric in (self.trials_ended, self.trial_duration, self.trial_resource):
                _remove(metric, namespace, experiment, phase)


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
