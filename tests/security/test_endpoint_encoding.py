"""A report body that cannot be decoded, as its Content-Encoding says it is (gzip that
is not gzip): a 400 for a trial, a 401 for a stranger, as any malformed body; it was a
500 ("internal error") and an error line in the log, before authentication."""

from __future__ import annotations

import json
import zlib

import aiohttp
import pytest

from tests.security.test_endpoint import Endpoint, endpoint
from tests.unit.test_ingest import body

__all__ = ["endpoint"]  # the fixture: a real server on loopback


async def post_encoded(url: str, data: bytes, token: str, encoding: str) -> tuple[int, str]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": encoding,
    }
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_is_a_400_never_a_500(
    endpoint: Endpoint, encoding: str
) -> None:
    _, url, engine, tokens = endpoint
    before = list(engine.history)
    garbage = b"this is not compressed at all" * 10
    status, text = await post_encoded(url, garbage, tokens.token_for("exp-0"), encoding)
    assert status == 400, text
    assert "could not be decoded" in text
    assert await post_encoded(url, garbage, "junk", encoding) == (401, '{"error": "invalid token"}')
    assert engine.history == before


async def test_a_body_that_decodes_is_read(endpoint: Endpoint) -> None:
    _, url, _, tokens = endpoint
    packed = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = packed.compress(json.dumps(body()).encode()) + packed.flush()
    status, text = await post_encoded(url, data, tokens.token_for("exp-0"), "gzip")
    assert status == 200, text
