"""API keys of accounts: create (the key shown once), list, revoke, rotate, and resolve for services.

The key itself is never stored, logged or listed: only its SHA-256 (``shared.apikeys.key_hash``).
Resolution (``resolve``) is what every service asks through ``shared.apikeys.KeyResolver``; invalid
keys are counted per client address and past API_KEY_FAILURES_PER_ADDRESS every key from that
address is refused for a while (429), valid or not, so guessing learns nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shared.apikeys import SCOPES, KeyGrant, invalid_key, new_key
from shared.apikeys import key_hash as hash_of
from shared.errors import ProblemError
from shared.ratelimit import RateLimiter
from ultrai_auth.key_repository import KeyRepository
from ultrai_auth.models import ApiKey
from ultrai_auth.revocation import Revoker
from ultrai_auth.settings import AuthSettings
from ultrai_auth.throttle import too_many

log = logging.getLogger("ultrai_auth")

# How stale a key's recorded last use may be before a resolution writes it again.
LAST_USED_PRECISION_SECONDS = 60.0


@dataclass(frozen=True)
class KeySpec:
    name: str
    scopes: tuple[str, ...]
    expires_in_days: int | None = None
    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None


def grant_of(key: ApiKey) -> KeyGrant:
    return KeyGrant(
        key_id=key.id,
        user_id=key.user_id,
        scopes=tuple(key.scopes.split()),
        expires_at=key.expires_at,
        budget_usd=key.budget_usd,
        rpm=key.rpm,
        tpm=key.tpm,
    )


def not_found() -> ProblemError:
    return ProblemError(404, "No such API key.", title="Not found")


class KeyService:
    def __init__(
        self, repository: KeyRepository, revoker: Revoker, limiter: RateLimiter, settings: AuthSettings
    ) -> None:
        self.repository = repository
        self.revoker = revoker
        self.limiter = limiter
        self.settings = settings

    async def create(self, user_id: str, spec: KeySpec) -> tuple[ApiKey, str]:
        """A new key for the account: the row, and the key (shown once)."""
        if await self.repository.live_count(user_id) >= self.settings.api_keys_per_user:
            raise ProblemError(
                409,
                f"An account may hold {self.settings.api_keys_per_user} API keys; revoke one first.",
                title="Conflict",
            )
        now = time.time()
        expires_at = None if spec.expires_in_days is None else now + spec.expires_in_days * 86_400
        row, key = _new_row(
            user_id, spec.name, " ".join(spec.scopes or SCOPES), expires_at, spec.budget_usd, spec.rpm, spec.tpm
        )
        self.repository.add(row)
        await self.repository.commit()
        log.info("api key created: %s for %s", row.id, user_id)
        return row, key

    async def listing(self, user_id: str) -> list[ApiKey]:
        return await self.repository.listing(user_id)

    async def revoke(self, user_id: str, key_id: str) -> None:
        """Revoke one of the account's keys; every service refuses it within a second or two."""
        row = await self.repository.owned(user_id, key_id)
        if row is None:
            raise not_found()
        row.revoked_at = time.time()
        await self.repository.commit()
        await self.revoker.revoke("key", key_id)
        log.info("api key revoked: %s", key_id)

    async def rotate(self, user_id: str, key_id: str) -> tuple[ApiKey, str]:
        """A new key with the old one's name, scopes, expiry and limits; the old one is revoked."""
        row = await self.repository.owned(user_id, key_id)
        if row is None:
            raise not_found()
        fresh, key = _new_row(user_id, row.name, row.scopes, row.expires_at, row.budget_usd, row.rpm, row.tpm)
        row.revoked_at = fresh.created_at
        self.repository.add(fresh)
        await self.repository.commit()
        await self.revoker.revoke("key", key_id)
        log.info("api key rotated: %s -> %s", key_id, fresh.id)
        return fresh, key

    async def resolve(self, digest: str, address: str) -> KeyGrant:
        """The grant of a live, unexpired key with this hash, for a client at ``address``."""
        rate = self.settings.api_key_failures_per_address
        decision = await self.limiter.test(rate, "apikey-fail", address)
        if not decision.allowed:
            raise too_many(decision, "Too many invalid API keys from this address; try again later.")
        row = await self.repository.by_hash(digest)
        now = time.time()
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            await self.limiter.hit(rate, "apikey-fail", address)
            raise invalid_key()
        grant = grant_of(row)
        # Last use to the minute: a resolution is a read, and writes only when the recorded last use
        # is older than that (a write per resolution was most of its cost).
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION_SECONDS:
            row.last_used_at = now
            await self.repository.commit()
        else:
            await self.repository.release()
        return grant

    async def grant(self, key_id: str, user_id: str) -> KeyGrant:
        """The grant of the user's live, unexpired key ``key_id`` (for a service that acts with the
        key a user presented to another service); the same 401 as any invalid key otherwise."""
        row = await self.repository.owned(user_id, key_id)
        if row is None or (row.expires_at is not None and row.expires_at <= time.time()):
            raise invalid_key()
        return grant_of(row)

    async def add_spend(self, spend: dict[str, float]) -> None:
        now = time.time()
        for key_id, cost in spend.items():
            await self.repository.add_spend(key_id, cost, now)
        await self.repository.commit()


def _new_row(
    user_id: str,
    name: str,
    scopes: str,
    expires_at: float | None,
    budget_usd: float | None,
    rpm: int | None,
    tpm: int | None,
) -> tuple[ApiKey, str]:
    """A new key and its row (the row holds only the key's hash)."""
    key_id, key = new_key()
    row = ApiKey(
        id=key_id,
        user_id=user_id,
        name=name,
        key_hash=hash_of(key),
        scopes=scopes,
        created_at=time.time(),
        expires_at=expires_at,
        budget_usd=budget_usd,
        rpm=rpm,
        tpm=tpm,
        spent_usd=0.0,
    )
    return row, key
