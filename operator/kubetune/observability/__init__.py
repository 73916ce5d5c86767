"""Observability: Prometheus metrics, trial Events and JSON logs, for the operator and local mode.

No module state: each process (the operator, a local run) makes an `Observer`
(kubetune.observability.observer), which holds its `Metrics` and what it has seen of
each experiment's trials, and hands it to what counts. prometheus-client comes with the
`operator` extra: without it an Observer counts nothing and `/metrics` answers 503, so
`kubetune run` works on a bare install.

An Observer's hooks, and where they are called:

* `track` / `trial_events`: after each durable write (the operator's
  `writes.StatusWriter.persist`, the local runner's `_write`): trial ends, pauses,
  promotions, interruptions.
* `report_answered`, `refusal_middleware`, `metrics_endpoint`: the report endpoint.
* `reconcile_error`: the operator's handlers and resync loop; `history_records_*` and
  `object_restored`: the operator's controllers.
* `watch_registry` (operator) / `serve_local` (local mode): the engines read at scrape.
* `observe_node_pool`, `observe_cost`, `observe_spot_interruption`: the capacity loop
  (which knows them as `capacity.kubeobjects.CapacityMetrics`). `forget`: an
  experiment was deleted.

See manifests/monitoring/ for the ServiceMonitor, the alerts and the Grafana dashboard.
"""

from __future__ import annotations

from kubetune.observability.logs import (
    LOG_FORMATS,
    JsonFormatter,
    bind_log_context,
    configure_logging,
)
from kubetune.observability.observer import (
    AVAILABLE,
    LocalMetrics,
    MetricsUnavailable,
    Observer,
)
from kubetune.observability.transitions import Change, Transition, TrialWatcher

__all__ = [
    "AVAILABLE",
    "LOG_FORMATS",
    "Change",
    "JsonFormatter",
    "LocalMetrics",
    "MetricsUnavailable",
    "Observer",
    "Transition",
    "TrialWatcher",
    "bind_log_context",
    "configure_logging",
]
