"""Writing revocations: to the shared store every verifier reads, and to a short in-process list that
verifiers poll when there is no Redis (see shared/tokens.py)."""

from __future__ import annotations

import time
from typing import Literal

from shared.tokens import RevocationStore
from ultrai_auth.settings import AuthSettings

Kind = Literal["jti", "sid", "user", "key"]


class Revoker:
    def __init__(self, store: RevocationStore, settings: AuthSettings) -> None:
        self.store = store
        # An entry matters only while a token it covers can still be valid.
        self.ttl = max(settings.access_token_ttl_seconds, settings.service_token_ttl_seconds) + (
            settings.jwt_leeway_seconds + 60
        )
        self.recent: dict[Kind, dict[str, float]] = {"jti": {}, "sid": {}, "user": {}, "key": {}}

    async def revoke(self, kind: Kind, *values: str) -> None:
        expires = time.time() + self.ttl
        for value in values:
            self.recent[kind][value] = expires
            await self.store.revoke(kind, value, self.ttl)

    def listing(self) -> dict[str, dict[str, float]]:
        now = time.time()
        for entries in self.recent.values():
            for key in [k for k, until in entries.items() if until <= now]:
                del entries[key]
        return {kind: dict(entries) for kind, entries in self.recent.items()}
