"""Following trial pods' logs for `name=value` metric lines (scripts without the SDK).

One aiohttp stream per running pod, on the operator's event loop (no thread per pod),
authenticated with the operator's own client credentials. A pod is followed only until
its trial reports through the SDK: then its lines are just output.

The stream is read in chunks, not lines, and split at `\n` and `\r` with long lines cut
(logparse.LineSplitter): a progress bar redrawn with `\r` for an hour is not one line
to hold in memory, nor one that ends the stream with "line too long".
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable

import aiohttp
from kubernetes import client

from kubetune.logparse import Line, LineSplitter, parse_metrics_line

logger = logging.getLogger(__name__)

LineReport = Callable[[int, dict[str, float]], Awaitable[bool]]


class LogStreams:
    def __init__(self, api: client.ApiClient) -> None:
        config = api.configuration
        self.host = config.host.rstrip("/")
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        self.ssl = context
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
            "authorization"
        )
        self.headers = {"Authorization": header} if header else {}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
            self._session = aiohttp.ClientSession(headers=self.headers, timeout=timeout)
        return self._session

    async def follow(
        self,
        namespace: str,
        pod: str,
        container: str,
        resource: str | None,
        on_line: LineReport,
        objective: str | None = None,
    ) -> None:
        """Stream the pod's log until it ends or `on_line` returns False (stop following).

        With `objective`, lines that do not carry it are not reported: a chatty trial's
        other values drive no decision and need not become events.
        """
        url = f"{self.host}/api/v1/namespaces/{namespace}/pods/{pod}/log"
        params = {"follow": "true", "container": container}
        for _ in range(30):  # the container may not have started yet: retry briefly
            try:
                async with self.session().get(url, params=params, ssl=self.ssl) as response:
                    if response.status == 400:
                        await asyncio.sleep(1.0)
                        continue
                    if response.status != 200:
                        logger.warning("logs of %s/%s: HTTP %s", namespace, pod, response.status)
                        return
                    await report_lines(response.content.iter_any(), resource, on_line, objective)
                    return
            except aiohttp.ClientError as error:
                logger.warning("logs of %s/%s: %s", namespace, pod, error)
                await asyncio.sleep(1.0)
        return

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def report_lines(
    chunks: AsyncIterable[bytes],
    resource: str | None,
    on_line: LineReport,
    objective: str | None = None,
) -> bool:
    """Report the metric lines in a stream of output chunks; False once `on_line` says stop."""
    splitter = LineSplitter()
    count = 0

    async def report(lines: list[Line]) -> bool:
        nonlocal count
        for line in lines:
            parsed = parse_metrics_line(line.data.decode(errors="replace"), resource, count + 1)
            if parsed is None:
                continue
            count += 1
            if objective is not None and objective not in parsed[1]:
                continue
            if not await on_line(*parsed):
                return False
        return True

    async for chunk in chunks:
        if not await report(splitter.feed(chunk)):
            return False
    return await report(splitter.close())
