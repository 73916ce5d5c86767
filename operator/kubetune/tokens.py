"""Per-trial bearer tokens: HMAC-SHA256 of the trial's identity under a secret key.

Derived, not stored: a restarted server recomputes every token from the key, and no
token is ever written into a status, an event or a log.

The scope names one run of one experiment: `namespace/name/uid` in the operator (a
recreated experiment of the same name has a new UID, so the old trials' tokens are
worthless to it), the experiment's name under its own state directory's key in local
mode. Checking a token derives the expected one and compares: nothing is remembered
about a request until its token has proved to be a trial's, and what is remembered then
(token -> trial, to name the owner of a token sent for another trial) is bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from itertools import islice

# Verified tokens kept to name a token's owner without deriving every trial's token
# again; an experiment with more trials than this only re-derives more often.
DEFAULT_CACHE_SIZE = 1024
# Naming a token's owner derives a token per candidate trial, for requests whose token
# has not proved anything yet: a stranger's request must not cost one HMAC per trial
# of the experiment (100,000 trials: 0.4 s of the event loop per junk request). Past
# these, an unknown token is only "invalid" (401), not "another trial's" (403).
MAX_OWNER_DERIVATIONS = 64


def experiment_scope(namespace: str, name: str, uid: str) -> str:
    """The token scope of one experiment object on a cluster."""
    return f"{namespace}/{name}/{uid}"


def release_0_scope(namespace: str, name: str) -> str:
    """The scope kubetune v0.1.0's operator derived tokens under (no UID). Pods it
    launched still hold such tokens when a later operator takes their experiment over."""
    return f"{namespace}/{name}"


class TokenAuthority:
    def __init__(self, key: bytes, scope: str, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if len(key) < 16:
            raise ValueError("token key must be at least 16 bytes")
        self._key = key
        self._scope = scope
        self._cache_size = cache_size
        self._verified: OrderedDict[str, str] = OrderedDict()
        self._release_0: tuple[str, frozenset[str]] | None = None

    @staticmethod
    def new_key() -> bytes:
        return secrets.token_bytes(32)

    def token_for(self, trial: str) -> str:
        """The trial's token (pure: nothing is stored)."""
        return hmac.new(self._key, f"{self._scope}/{trial}".encode(), hashlib.sha256).hexdigest()

    def accept_release_0(self, scope: str, trials: Iterable[str]) -> None:
        """Also accept, for these trials only, the tokens derived under `scope` by an
        operator before the UID was in the scope: their running pods were launched by
        it (their last launch record says so) and hold those tokens. Replaces any
        earlier call's trials."""
        self._release_0 = (scope, frozenset(trials))

    def verify(self, token: str, trial: str) -> bool:
        if not hmac.compare_digest(self.token_for(trial), token) and not self._release_0_token(
            token, trial
        ):
            return False
        self._remember(token, trial)
        return True

    def owner(self, token: str, known_trials: Iterable[str] = ()) -> str | None:
        """The trial a token belongs to, among those verified before or the first
        MAX_OWNER_DERIVATIONS listed; None if no one's. `known_trials` must come from the
        server's own state, never a request."""
        trial = self._verified.get(token)
        if trial is not None:
            self._verified.move_to_end(token)
            return trial
        for trial in islice(known_trials, MAX_OWNER_DERIVATIONS):
            if self.verify(token, trial):
                return trial
        return None

    @property
    def cached(self) -> int:
        """How many verified tokens are remembered (at most the cache size)."""
        return len(self._verified)

    def _release_0_token(self, token: str, trial: str) -> bool:
        if self._release_0 is None or trial not in self._release_0[1]:
            return False
        message = f"{self._release_0[0]}/{trial}".encode()
        expected = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, token)

    def _remember(self, token: str, trial: str) -> None:
        self._verified[token] = trial
        self._verified.move_to_end(token)
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
