"""A client that sends requests and never reads the answers (a slow-read attack) on the
report endpoint: its connection is aborted once the answers have waited unread for the
write timeout, so a few such clients cannot hold the connection cap for ever.

Before: aiohttp's handler waited in `drain()` with no deadline (the head deadline and
the keep-alive timeout do not apply to a connection busy answering), so 8 such
connections kept an endpoint capped at 8 answering every trial 503, for as long as
their clients liked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from kubetune.httpserver import Limits
from kubetune.ingest import Report, ReportServer
from kubetune.tokens import TokenAuthority
from kubetune.trials import Verdict

CAP = 8
PIPELINED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000  # about 1.5 MB of answers


async def never_reading(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    with contextlib.suppress(BlockingIOError):
        sock.send(PIPELINED)
    return sock


async def test_connections_that_read_no_answers_are_aborted() -> None:
    async def handle(report: Report) -> Verdict:
        raise AssertionError("no report is sent here")

    server = ReportServer.single(TokenAuthority(b"k" * 32, "ns/exp/uid"), handle, lambda: ())
    server.limits = Limits(
        max_connections=CAP, header_timeout=1.0, keepalive_timeout=1.0, write_timeout=2.0
    )
    await server.start()
    assert server.port is not None
    socks = [await never_reading(server.port) for _ in range(CAP)]
    try:
        await asyncio.sleep(1.0)
        assert server.connections == CAP  # all busy answering: the cap is full
        deadline = time.monotonic() + 15
        while server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert server.connections == 0, f"{server.connections} connections still held"
        assert server.aborted_connections == CAP
        # A trial gets through again.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        for sock in socks:
            sock.close()
        await server.stop()
