"""`/metrics` over aiohttp: a handler for the report server, and a small server for local mode.

Scrapes run on the event loop that owns the engines, so the collector reads them
between two changes, never in the middle of one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from kubetune.httpserver import AppServer
from kubetune.observability.metrics import Metrics


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        body = encode(metrics.registry)
        # aiohttp refuses a charset inside content_type: pass the header as it is.
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})

    return handle


class MetricsServer(AppServer):
    """Serves `/metrics` (and `/healthz`) on its own port: `kubetune run --metrics-port`."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(web.Application())
        self.app.router.add_get("/metrics", metrics_handler(metrics))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return f"{await super().start(host, port)}/metrics"
