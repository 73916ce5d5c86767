"""`/metrics` over aiohttp: a handler for the report server, and a small server for local mode.

Scrapes run on the event loop that owns the engines, so the collector reads them
between two changes, never in the middle of one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client.exposition import choose_encoder

from kubetune.observability.metrics import Metrics


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        body = encode(metrics.registry)
        # aiohttp refuses a charset inside content_type: pass the header as it is.
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})

    return handle


class MetricsServer:
    """Serves `/metrics` (and `/healthz`) on its own port: `kubetune run --metrics-port`."""

    def __init__(self, metrics: Metrics) -> None:
        self.app = web.Application()
        self.app.router.add_get("/metrics", metrics_handler(metrics))
        self.app.router.add_get("/healthz", self._health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return f"http://{host}:{self.port}/metrics"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
