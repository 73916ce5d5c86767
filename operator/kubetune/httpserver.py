"""The small aiohttp server shape the report endpoint and the metrics endpoint share.

Anyone who can reach the Service (or, in local mode, the loopback port) can talk to it,
so it carries the limits such a server needs:

* a connection cap: a connection beyond `max_connections` gets a 503 and is closed at
  once, before any of it is read;
* a deadline for a request's head: a connection that has not sent a whole request line
  and headers within `header_timeout` of connecting is closed, and an idle keep-alive
  connection within `keepalive_timeout` of its last response, so idle or trickling
  half-open connections cannot pile up (handlers bound their body reads themselves,
  `body_timeout`);
* a deadline for writing: a connection whose answers have waited unread in its send
  buffer for `write_timeout` is aborted (a client that pipelines requests and reads
  none held its connection for ever, so a few such clients filled the connection cap
  and every trial got 503);
* errors, aiohttp's own included, logged as one bounded line each and at most `burst`
  lines a minute: a client can cause a 4xx or a 500, never a traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    body_timeout: float = 10.0
    write_timeout: float = 10.0


class OneLineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every record is one line of at most `width` characters (an
    exception becomes `Type: message`, never a traceback), at most `burst` records per
    `window` seconds; the number left out is logged when the next window opens."""

    def __init__(
        self, target: logging.Logger, burst: int = 20, window: float = 60.0, width: int = 300
    ) -> None:
        super().__init__(target, {})
        self.burst, self.window, self.width = burst, window, width
        self._window_start = -window
        self._count = 0
        self._suppressed = 0

    def log(  # type: ignore[override]
        self, level: int, msg: object, *args: object, exc_info: Any = None, **_: Any
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        if now - self._window_start >= self.window:
            if self._suppressed:
                left_out, window = self._suppressed, self.window
                self.logger.warning("%d log lines left out in the last %.0f s", left_out, window)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count >= self.burst:
            self._suppressed += 1
            return
        self._count += 1
        self.logger.log(level, "%s", self.line(msg, args, exc_info))

    def line(self, msg: object, args: tuple[object, ...], exc_info: Any) -> str:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        error = _exception(exc_info)
        if error is not None:
            text = f"{text}: {type(error).__name__}: {_describe(error)}"
        text = " ".join(text.split())  # one line, whatever the message held
        return text if len(text) <= self.width else text[: self.width] + "..."


def _exception(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    if exc_info:
        return sys.exc_info()[1]
    return None


def _describe(error: BaseException) -> str:
    try:
        return str(error)[:1000]
    except Exception:  # str() of some errors fails (a huge int's digits, say)
        return "(no message)"


class _Refuse(asyncio.Protocol):
    """A connection over the cap: 503 and closed before anything is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        transport.close()


class _GuardedSite(web.TCPSite):
    """A TCP site whose connections come through the AppServer's guard."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, factory: Any) -> None:
        super().__init__(runner, host, port)
        self._factory = factory

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self._host, self._port)


class AppServer:
    """An aiohttp application with `/healthz`, started on a host and port (0: any free)."""

    def __init__(self, app: web.Application, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.log = OneLineLog(logger)
        self.app.middlewares.insert(0, self._guard)
        self.app.router.add_get("/healthz", self._health)
        self._runner: web.AppRunner | None = None
        self._connecting = 0  # accepted, not yet handed to aiohttp (see _protocol)
        # Transports whose connection sent a whole request head in time.
        self._started: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.refused_connections = 0
        # Since when each connection's send buffer has held answers its client left unread.
        self._unread: weakref.WeakKeyDictionary[asyncio.BaseTransport, float] = (
            weakref.WeakKeyDictionary()
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.aborted_connections = 0
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve; returns the base URL (with the port bound when 0 was asked)."""
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            keepalive_timeout=self.limits.keepalive_timeout,
            logger=self.log,
        )
        await self._runner.setup()
        site = _GuardedSite(self._runner, host, port, self._protocol)
        await site.start()
        server = cast(asyncio.Server | None, site._server)
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_unread())
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._runner is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        if self.connections + self._connecting >= self.limits.max_connections:
            self.refused_connections += 1
            self.log.warning(
                "connection refused: %d connections open, the limit", self.limits.max_connections
            )
            return _Refuse()
        handler = self._runner.server()
        # aiohttp counts a connection once its transport is made, which asyncio schedules
        # right after this call: count it here until then.
        self._connecting += 1
        loop.call_soon(self._made)
        loop.call_later(self.limits.header_timeout, self._head_deadline, handler)
        return handler

    async def _sweep_unread(self) -> None:
        period = min(1.0, self.limits.write_timeout / 4)
        while True:
            await asyncio.sleep(period)
            self.abort_unread(time.monotonic())

    def abort_unread(self, now: float) -> None:
        """Aborts the connections whose send buffer has not been empty since
        `write_timeout` ago. A handler blocked writing to such a client is in no
        other deadline's reach: its head came in time, and it is not idle."""
        server = self._runner.server if self._runner is not None else None
        for handler in list(server.connections if server is not None else ()):
            transport = handler.transport
            if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                continue
            if transport.get_write_buffer_size() == 0:
                self._unread.pop(transport, None)
                continue
            since = self._unread.setdefault(transport, now)
            if now - since >= self.limits.write_timeout:
                self.aborted_connections += 1
                self.log.warning("connection aborted: answers left unread for %.0f s", now - since)
                transport.abort()

    def _made(self) -> None:
        self._connecting -= 1

    def _head_deadline(self, handler: RequestHandler) -> None:
        transport = handler.transport
        if transport is not None and transport not in self._started:
            handler.force_close()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.transport is not None:
            self._started.add(request.transport)  # its head arrived in time
        try:
            return await handler(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as error:
            self.log.error("%s %s failed", request.method, request.path[:100], exc_info=error)
            return web.json_response({"error": "internal error"}, status=500)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
