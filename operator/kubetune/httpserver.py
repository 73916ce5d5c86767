"""The small aiohttp server shape the report endpoint and the metrics endpoint share."""

from __future__ import annotations

from aiohttp import web


class AppServer:
    """An aiohttp application with `/healthz`, started on a host and port (0: any free)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.app.router.add_get("/healthz", self._health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve; returns the base URL (with the port bound when 0 was asked)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
