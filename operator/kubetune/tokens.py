"""Per-trial bearer tokens: HMAC-SHA256 of the trial's identity under a secret key.

Derived, not stored: a restarted server recomputes every token from the key, and no
token is ever written into a status, an event or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable


class TokenAuthority:
    def __init__(self, key: bytes, scope: str) -> None:
        if len(key) < 16:
            raise ValueError("token key must be at least 16 bytes")
        self._key = key
        self._scope = scope
        self._owners: dict[str, str] = {}

    @staticmethod
    def new_key() -> bytes:
        return secrets.token_bytes(32)

    def token_for(self, trial: str) -> str:
        token = hmac.new(self._key, f"{self._scope}/{trial}".encode(), hashlib.sha256).hexdigest()
        self._owners[token] = trial
        return token

    def verify(self, token: str, trial: str) -> bool:
        return hmac.compare_digest(self.token_for(trial), token)

    def owner(self, token: str, known_trials: Iterable[str] = ()) -> str | None:
        """The trial a token belongs to, among those seen or listed; None if no one's."""
        if token in self._owners:
            return self._owners[token]
        for trial in known_trials:
            if self.verify(token, trial):
                return trial
        return None
