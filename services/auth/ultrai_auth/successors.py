"""The reuse interval: a refresh token presented again shortly after it was spent gets the same
successor, so concurrent refreshes (several tabs, a retried request) do not end the session.

The request that spent the token keeps what it handed out in the shared key-value store (Redis when
configured, so every auth worker sees it) for the interval, under the old token's hash and
encrypted with a key derived from the old token itself (HKDF-SHA256, then AES-256-GCM): only a
caller that holds the old token can read it, and the store never holds a usable token. Anything
missing, expired or unreadable is no successor, and the caller falls back to reuse detection.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.kv import KeyValue

# How long a request that lost the race waits, at most, for the winner's successor to be stored.
MAX_WAIT_SECONDS = 2.0
POLL_SECONDS = 0.05
_SALT = b"ultrai-auth refresh successor"
_INFO = b"aes-256-gcm key v1"
_NONCE_BYTES = 12


@dataclass(frozen=True)
class Grant:
    """What a login or a refresh hands out: an access token, and a refresh token of its session."""

    user_id: str
    session_id: str
    access_token: str
    refresh_token: str
    # When the session (and so the refresh token) expires, in epoch seconds.
    refresh_expires_at: float
    expires_in: int

    def refresh_max_age(self, now: float | None = None) -> int:
        """Seconds the refresh token has left (a cookie's Max-Age)."""
        return max(0, int(self.refresh_expires_at - (time.time() if now is None else now)))


def _key(old_token: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO)
    return AESGCM(hkdf.derive(old_token.encode()))


def seal(old_token: str, digest: str, grant: Grant) -> bytes:
    """``grant`` encrypted under ``old_token``, bound to its hash ``digest``."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _key(old_token).encrypt(nonce, json.dumps(asdict(grant)).encode(), digest.encode())


def unseal(old_token: str, digest: str, sealed: bytes) -> Grant | None:
    """The grant ``seal`` stored, or None when it cannot be read with ``old_token``."""
    if len(sealed) <= _NONCE_BYTES:
        return None
    try:
        plain = _key(old_token).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], digest.encode())
        return Grant(**json.loads(plain))
    except (InvalidTag, ValueError, TypeError):
        return None


class Successors:
    def __init__(self, kv: KeyValue, interval: float) -> None:
        self.kv = kv
        self.interval = interval

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @staticmethod
    def _name(digest: str) -> str:
        return f"refresh-successor:{digest}"

    async def remember(self, old_token: str, digest: str, grant: Grant) -> None:
        """Keep ``grant`` for the interval as the successor of ``old_token`` (whose hash is ``digest``)."""
        if self.enabled:
            await self.kv.set(self._name(digest), seal(old_token, digest, grant), ttl=self.interval)

    async def wait_for(self, old_token: str, digest: str, at_most: float) -> Grant | None:
        """The successor of ``old_token``, polled for up to ``at_most`` seconds (bounded by
        MAX_WAIT_SECONDS; the winner stores it once its rotation is committed); None if it does not
        appear."""
        deadline = time.monotonic() + max(0.0, min(at_most, MAX_WAIT_SECONDS))
        while True:
            sealed = await self.kv.get(self._name(digest))
            if sealed is not None:
                return unseal(old_token, digest, sealed)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_SECONDS)
