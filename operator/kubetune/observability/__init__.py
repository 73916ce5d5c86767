"""Observability: Prometheus metrics, trial Events and JSON logs, for the operator and local mode.

The shells call the functions here (they are the hooks; each is one line where it is
called); the process's metrics live in `METRICS`, a `Metrics` with a registry of its
own. prometheus-client comes with the `operator` extra: without it the hooks do nothing
and `/metrics` answers 503, so `kubetune run` works on a bare install.

Hooks, and where they are called:

* `track` / `trial_events`: after each durable write (controller `_persist`, local
  runner `_persist`): trial ends, pauses, promotions, interruptions.
* `report_answered` (report endpoint, around the handler) and `refusal_middleware`.
* `reconcile_error`: the operator's handlers and resync loop.
* `watch_registry` (operator) / `serve_local` (local mode): the engines read at scrape.
* `observe_node_pool`, `observe_cost`, `observe_spot_interruption`: for the capacity
  manager. `forget`: an experiment was deleted.

See manifests/monitoring/ for the ServiceMonitor, the alerts and the Grafana dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from kubetune.engine import Engine
from kubetune.observability.logs import (
    LOG_FORMATS,
    JsonFormatter,
    bind_log_context,
    configure_logging,
)
from kubetune.observability.transitions import Change, Transition, TrialWatcher

try:
    from kubetune.observability.metrics import ExperimentView, Metrics
    from kubetune.observability.serve import MetricsServer, metrics_handler
except ImportError:  # pragma: no cover - prometheus-client is in the `operator` extra
    AVAILABLE = False
else:
    AVAILABLE = True

logger = logging.getLogger(__name__)

METRICS: Metrics | None = Metrics() if AVAILABLE else None
_ENDPOINT = metrics_handler(METRICS) if METRICS is not None else None
_WATCHERS: dict[tuple[str, str], TrialWatcher] = {}


class MetricsUnavailable(Exception):
    """Metrics were asked for where they cannot be served."""


# ----- trials -------------------------------------------------------------------------


def track(namespace: str, experiment: str, engine: Engine) -> list[Transition]:
    """What changed in the experiment's trials since the last call; counted in METRICS."""
    key = (namespace, experiment)
    watcher = _WATCHERS.get(key)
    if watcher is None:
        watcher = _WATCHERS[key] = TrialWatcher()
        if METRICS is not None:
            METRICS.start_experiment(namespace, experiment)
    changes = watcher.update(engine)
    if METRICS is not None and changes:
        METRICS.transitions(namespace, experiment, changes)
    return changes


def trial_events(namespace: str, experiment: str, engine: Engine) -> list[tuple[str, str, bool]]:
    """`track`, as (message, reason, warning) of the Kubernetes Events to post."""
    events = []
    for change in track(namespace, experiment, engine):
        event = change.event()
        if event is not None:
            reason, message, warning = event
            events.append((message, reason, warning))
    return events


def forget(namespace: str, experiment: str) -> None:
    """The experiment is gone: drop its series and what was seen of its trials."""
    _WATCHERS.pop((namespace, experiment), None)
    if METRICS is not None:
        METRICS.forget(namespace, experiment)


# ----- the report endpoint ------------------------------------------------------------


def report_answered(namespace: str, experiment: str, decision: str, seconds: float) -> None:
    if METRICS is not None:
        METRICS.report_answered(namespace, experiment, decision, seconds)


@web.middleware
async def refusal_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Counts refused trial reports by status code (the report handler returns them)."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        _count_refusal(request, error.status)
        raise
    _count_refusal(request, response.status)
    return response


def _count_refusal(request: web.Request, status: int) -> None:
    if METRICS is not None and status >= 400 and request.path.endswith("/v1/reports"):
        METRICS.report_refused(status)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics on the report server."""
    if _ENDPOINT is None:
        text = "metrics need prometheus-client: pip install 'kubetune[operator]'\n"
        return web.Response(status=503, text=text)
    return await _ENDPOINT(request)


# ----- the operator -------------------------------------------------------------------


def reconcile_error(handler: str, error: BaseException) -> None:
    if METRICS is not None:
        METRICS.reconcile_error(handler, error)


def history_records_refused(namespace: str, experiment: str, count: int) -> None:
    if METRICS is not None:
        METRICS.history_records_refused(namespace, experiment, count)


def history_records_missing(namespace: str, experiment: str, count: int) -> None:
    if METRICS is not None:
        METRICS.history_records_missing(namespace, experiment, count)


def object_restored(kind: str, what: str) -> None:
    if METRICS is not None:
        METRICS.object_restored(kind, what)


def watch(source: Callable[[], Iterable[Any]]) -> Callable[[], None]:
    """Read `source` (ExperimentViews) at each scrape; returns the function that stops it."""
    if METRICS is None:
        return lambda: None
    return METRICS.add_source(source)


def watch_registry(registry: Any) -> Callable[[], None]:
    """The operator's `handlers.Registry`: every loaded controller's engine, at scrape time."""

    def views() -> list[Any]:
        return [
            ExperimentView(c.namespace, c.name, c.engine)
            for c in list(registry.controllers.values())
            if c.loaded
        ]

    return watch(views)


# ----- node pools and cost (the capacity manager) -------------------------------------


def observe_node_pool(
    pool: str,
    desired: int,
    current: int,
    maximum: int | None = None,
    pending_pods: int | None = None,
) -> None:
    """A node pool's size: what the operator wants, what it has, its maximum, and the
    trial pods waiting for one of its nodes."""
    if METRICS is not None:
        METRICS.observe_node_pool(pool, desired, current, maximum, pending_pods)


def observe_spot_interruption(pool: str, count: int = 1) -> None:
    """Nodes of `pool` taken away by the cloud (spot reclaims)."""
    if METRICS is not None:
        METRICS.observe_spot_interruption(pool, count)


def observe_cost(namespace: str, experiment: str, usd: float) -> None:
    """What an experiment has cost so far, in US dollars (set, not added)."""
    if METRICS is not None:
        METRICS.observe_cost(namespace, experiment, usd)


# ----- local mode ---------------------------------------------------------------------


class LocalMetrics:
    """What `serve_local` started: the engine is read at scrape, maybe a server runs."""

    def __init__(self, remove: Callable[[], None], server: Any = None, url: str | None = None):
        self._remove = remove
        self.server = server
        self.url = url

    async def stop(self) -> None:
        self._remove()
        if self.server is not None:
            await self.server.stop()


async def serve_local(
    experiment: str, engine: Callable[[], Engine], port: int | None
) -> LocalMetrics:
    """`kubetune run`: the run's engine in METRICS; `/metrics` on 127.0.0.1:port if given."""
    if port is not None and METRICS is None:
        raise MetricsUnavailable(
            "--metrics-port needs prometheus-client: pip install 'kubetune[operator]'"
        )
    remove = watch(lambda: [ExperimentView("", experiment, engine())])
    if port is None:
        return LocalMetrics(remove)
    assert METRICS is not None
    server = MetricsServer(METRICS)
    try:
        url = await server.start("127.0.0.1", port)
    except OSError as error:
        remove()
        raise MetricsUnavailable(f"--metrics-port {port}: {error.strerror or error}") from None
    return LocalMetrics(remove, server, url)


__all__ = [
    "AVAILABLE",
    "LOG_FORMATS",
    "METRICS",
    "Change",
    "JsonFormatter",
    "LocalMetrics",
    "MetricsUnavailable",
    "Transition",
    "TrialWatcher",
    "bind_log_context",
    "configure_logging",
    "forget",
    "metrics_endpoint",
    "observe_cost",
    "observe_node_pool",
    "observe_spot_interruption",
    "reconcile_error",
    "refusal_middleware",
    "report_answered",
    "serve_local",
    "track",
    "trial_events",
    "watch",
    "watch_registry",
]
