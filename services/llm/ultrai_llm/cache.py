"""The response cache: identical requests (same model, messages and parameters) answered from the
shared KeyValue store (Redis when configured, an in-process LRU otherwise) for CACHE_TTL seconds.

Entries are kept per user: a shared entry would tell one user, by its ``cached`` flag or its speed,
that someone else had sent exactly that prompt (with, say, that document's text as context). Each
user's keys share a prefix (a digest of the user), so a deleted account's entries are erased with
the rest of its data (``erase``).

A Redis failure never fails a request: KeyValue falls back to process memory by itself, and anything
unreadable in the cache counts as a miss. Lookups are counted in ``cache_requests_total``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from shared.kv import KeyValue
from shared.metrics import CACHE

log = logging.getLogger("ultrai_llm.cache")
SERVICE = "llm"
CACHE_NAME = "responses"
VERSION = "v2"  # v2: keys under the user's prefix


def scope_prefix(scope: str) -> str:
    """Where one user's entries are kept: a digest of the user, so a deleted account's entries can be
    found and erased (``ResponseCache.erase``) without the key naming the user."""
    return f"resp:{VERSION}:{hashlib.sha256(scope.encode()).hexdigest()[:24]}:"


def cache_key(scope: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"scope": scope, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        separators=(",", ":"),
    )
    return scope_prefix(scope) + hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    def __init__(self, kv: KeyValue, ttl: int, enabled: bool = True) -> None:
        self.kv = kv
        self.ttl = ttl
        self.enabled = enabled

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.kv.get(key)
            entry = json.loads(raw) if raw is not None else None
        except Exception as exc:  # a broken entry or store is a miss, never an error
            log.warning("cache read failed: %s", type(exc).__name__)
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            CACHE.labels(SERVICE, CACHE_NAME, "miss").inc()
            return None
        CACHE.labels(SERVICE, CACHE_NAME, "hit").inc()
        return entry

    async def set(self, key: str, entry: dict[str, Any]) -> None:
        try:
            await self.kv.set(key, json.dumps(entry, separators=(",", ":")), ttl=self.ttl)
        except Exception as exc:
            log.warning("cache write failed: %s", type(exc).__name__)

    async def erase(self, scopes: list[str]) -> int:
        """Every entry of these users (deleted accounts); raises when Redis cannot do it now."""
        return await self.kv.delete_prefixes(f"resp:{VERSION}:", [scope_prefix(s) for s in scopes])

    @staticmethod
    def bypassed() -> None:
        CACHE.labels(SERVICE, CACHE_NAME, "bypass").inc()
