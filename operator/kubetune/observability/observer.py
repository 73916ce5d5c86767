"""`Observer`: one process's metrics and what it has seen of each experiment's trials.

No module state: whoever runs (the operator's `main`, a local run) makes one and hands
it to what counts: the operator's registry (kopf's memo holds it), its controllers,
resync loop and report endpoint, and the capacity loop; a local run and its report
endpoint. Without prometheus-client (the `operator` extra) an Observer counts nothing
and its `/metrics` answers 503, so `kubetune run` works on a bare install.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from kubetune.engine import Engine
from kubetune.observability.transitions import Transition, TrialWatcher

try:
    from kubetune.observability.metrics import ExperimentView, Metrics
    from kubetune.observability.serve import MetricsServer, metrics_handler
except ImportError:  # pragma: no cover - prometheus-client is in the `operator` extra
    AVAILABLE = False
else:
    AVAILABLE = True

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MetricsUnavailable(Exception):
    """Metrics were asked for where they cannot be served."""


class Watched(Protocol):
    """An experiment's controller as the metrics read it."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def loaded(self) -> bool: ...


class Controllers(Protocol):
    """The operator's registry (`handlers.Registry`), as the metrics read it."""

    @property
    def controllers(self) -> Mapping[tuple[str, str], Watched]: ...


class Observer:
    def __init__(self, metrics: bool = True) -> None:
        """`metrics=False`: count nothing (a part built without a process around it)."""
        self.metrics: Metrics | None = Metrics() if metrics and AVAILABLE else None
        self._endpoint = metrics_handler(self.metrics) if self.metrics is not None else None
        self._watchers: dict[tuple[str, str], TrialWatcher] = {}

    # ----- trials -----------------------------------------------------------------------

    def track(self, namespace: str, experiment: str, engine: Engine) -> list[Transition]:
        """What changed in the experiment's trials since the last call; counted."""
        key = (namespace, experiment)
        watcher = self._watchers.get(key)
        if watcher is None:
            watcher = self._watchers[key] = TrialWatcher()
            if self.metrics is not None:
                self.metrics.start_experiment(namespace, experiment)
        changes = watcher.update(engine)
        if self.metrics is not None and changes:
            self.metrics.transitions(namespace, experiment, changes)
        return changes

    def trial_events(
        self, namespace: str, experiment: str, engine: Engine
    ) -> list[tuple[str, str, bool]]:
        """`track`, as (message, reason, warning) of the Kubernetes Events to post."""
        events = []
        for change in self.track(namespace, experiment, engine):
            event = change.event()
            if event is not None:
                reason, message, warning = event
                events.append((message, reason, warning))
        return events

    def forget(self, namespace: str, experiment: str) -> None:
        """The experiment is gone: drop its series and what was seen of its trials."""
        self._watchers.pop((namespace, experiment), None)
        if self.metrics is not None:
            self.metrics.forget(namespace, experiment)

    # ----- the report endpoint ----------------------------------------------------------

    def report_answered(
        self, namespace: str, experiment: str, decision: str, seconds: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.report_answered(namespace, experiment, decision, seconds)

    def refusal_middleware(self) -> Middleware:
        """An aiohttp middleware counting refused trial reports by status code."""

        @web.middleware
        async def count_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                self._count_refusal(request, error.status)
                raise
            self._count_refusal(request, response.status)
            return response

        return count_refusals

    def _count_refusal(self, request: web.Request, status: int) -> None:
        if self.metrics is not None and status >= 400 and request.path.endswith("/v1/reports"):
            self.metrics.report_refused(status)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        """GET /metrics on the report server."""
        if self._endpoint is None:
            text = "metrics need prometheus-client: pip install 'kubetune[operator]'\n"
            return web.Response(status=503, text=text)
        return await self._endpoint(request)

    # ----- the operator -----------------------------------------------------------------

    def reconcile_error(self, handler: str, error: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.reconcile_error(handler, error)

    def history_records_refused(self, namespace: str, experiment: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.history_records_refused(namespace, experiment, count)

    def history_records_missing(self, namespace: str, experiment: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.history_records_missing(namespace, experiment, count)

    def object_restored(self, kind: str, what: str) -> None:
        if self.metrics is not None:
            self.metrics.object_restored(kind, what)

    def watch(self, source: Callable[[], Iterable[ExperimentView]]) -> Callable[[], None]:
        """Read `source` at each scrape; returns the function that stops it."""
        if self.metrics is None:
            return lambda: None
        return self.metrics.add_source(source)

    def watch_registry(self, registry: Controllers) -> Callable[[], None]:
        """The operator's registry: every loaded controller's engine, at scrape time."""

        def views() -> list[ExperimentView]:
            return [
                ExperimentView(c.namespace, c.name, c.engine)
                for c in list(registry.controllers.values())
                if c.loaded
            ]

        return self.watch(views)

    # ----- node pools and cost (the capacity loop) --------------------------------------

    def observe_node_pool(
        self,
        pool: str,
        desired: int,
        current: int,
        maximum: int | None = None,
        pending_pods: int | None = None,
    ) -> None:
        """A node pool's size: what the operator wants, what it has, its maximum, and the
        trial pods waiting for one of its nodes."""
        if self.metrics is not None:
            self.metrics.observe_node_pool(pool, desired, current, maximum, pending_pods)

    def observe_spot_interruption(self, pool: str, count: int = 1) -> None:
        """Nodes of `pool` taken away by the cloud (spot reclaims)."""
        if self.metrics is not None:
            self.metrics.observe_spot_interruption(pool, count)

    def observe_cost(self, namespace: str, experiment: str, usd: float) -> None:
        """What an experiment has cost so far, in US dollars (set, not added)."""
        if self.metrics is not None:
            self.metrics.observe_cost(namespace, experiment, usd)

    # ----- local mode -------------------------------------------------------------------

    async def serve_local(
        self, experiment: str, engine: Callable[[], Engine], port: int | None
    ) -> LocalMetrics:
        """`kubetune run`: the run's engine read at scrape; `/metrics` on 127.0.0.1:port if
        given."""
        if port is not None and self.metrics is None:
            raise MetricsUnavailable(
                "--metrics-port needs prometheus-client: pip install 'kubetune[operator]'"
            )
        remove = self.watch(lambda: [ExperimentView("", experiment, engine())])
        if port is None:
            return LocalMetrics(remove)
        assert self.metrics is not None
        server = MetricsServer(self.metrics)
        try:
            url = await server.start("127.0.0.1", port)
        except OSError as error:
            remove()
            raise MetricsUnavailable(f"--metrics-port {port}: {error.strerror or error}") from None
        return LocalMetrics(remove, server, url)


class LocalMetrics:
    """What `serve_local` started: the engine is read at scrape, maybe a server runs."""

    def __init__(
        self,
        remove: Callable[[], None],
        server: MetricsServer | None = None,
        url: str | None = None,
    ) -> None:
        self._remove = remove
        self.server = server
        self.url = url

    async def stop(self) -> None:
        self._remove()
        if self.server is not None:
            await self.server.stop()
