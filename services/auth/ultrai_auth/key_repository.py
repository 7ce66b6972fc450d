"""Every query on ``api_keys``: the API keys of accounts (stored as hashes only)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from shared.db import Repository
from ultrai_auth.models import ApiKey, User


class KeyRepository(Repository):
    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def live_count(self, user_id: str) -> int:
        query = select(func.count()).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        return int((await self.session.execute(query)).scalar_one())

    async def listing(self, user_id: str) -> list[ApiKey]:
        query = (
            select(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc())
        )
        return list((await self.session.execute(query)).scalars())

    async def owned(self, user_id: str, key_id: str) -> ApiKey | None:
        query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_hash(self, digest: str) -> ApiKey | None:
        """A live key of an existing account with this hash."""
        query = (
            select(ApiKey)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def add_spend(self, key_id: str, cost: float, now: float) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(spent_usd=ApiKey.spent_usd + cost, last_used_at=now)
        )
