"""What a stranger's request costs the report endpoint in CPU: a bounded number of token
derivations, however many trials the experiment has (maxTrials may be 100,000).

Naming a token's owner (403 "another trial's") derived the token of every trial the
server knew, for any request with a bad token: 100,000 trials made each junk request
hold the operator's event loop (kopf's handlers included) for about 0.4 s.
"""

from __future__ import annotations

import json

import aiohttp

from kubetune.ingest import Report, ReportServer
from kubetune.tokens import MAX_OWNER_DERIVATIONS, TokenAuthority
from kubetune.trials import Verdict
from tests.unit.test_ingest import body

TRIALS = [f"exp-{n}" for n in range(100_000)]


class CountingAuthority(TokenAuthority):
    """Counts token derivations: one HMAC each."""

    derivations = 0

    def token_for(self, trial: str) -> str:
        self.derivations += 1
        return super().token_for(trial)


def test_naming_a_tokens_owner_derives_a_bounded_number_of_tokens() -> None:
    tokens = CountingAuthority(b"k" * 32, "ns/exp/uid")
    assert tokens.owner("junk", iter(TRIALS)) is None
    assert tokens.derivations <= MAX_OWNER_DERIVATIONS
    # A trial's token sent for another trial is still named: verified ones are cached.
    late = TRIALS[-1]
    assert tokens.verify(tokens.token_for(late), late)
    assert tokens.owner(tokens.token_for(late), iter(TRIALS)) == late


async def test_a_junk_request_costs_a_bounded_number_of_derivations() -> None:
    tokens = CountingAuthority(b"k" * 32, "ns/exp/uid")

    async def handle(report: Report) -> Verdict:
        raise AssertionError("a refused report reached the engine")

    server = ReportServer.single(tokens, handle, lambda: iter(TRIALS))
    await server.start()
    url = f"http://127.0.0.1:{server.port}/v1/reports"
    headers = {"Authorization": "Bearer junk", "Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            for data in (json.dumps(body(trial="exp-5")).encode(), b"[", b"{}"):
                tokens.derivations = 0
                async with session.post(url, data=data, headers=headers) as response:
                    assert response.status == 401
                # One for the trial named in the body, then the owner search.
                assert tokens.derivations <= 1 + MAX_OWNER_DERIVATIONS, data
    finally:
        await server.stop()
