"""The queries on this service's table (``llm_usage``): every read and write of it is here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ultrai_llm.models import UsageRecord


async def add_usage(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write recorded calls (``UsageRecord`` columns) in one statement, and commit."""
    await session.execute(insert(UsageRecord), rows)
    await session.commit()


async def usage_per_model(session: AsyncSession, user_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per model since ``since``: its requests, cached requests, tokens and cost (unrounded)."""
    query = (
        select(
            UsageRecord.model,
            func.count(),
            func.sum(case((UsageRecord.cached, 1), else_=0)),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.cost_usd),
        )
        .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
        .group_by(UsageRecord.model)
    )
    return [
        {
            "model": model,
            "requests": int(count),
            "cached": int(cached or 0),
            "prompt_tokens": int(pt or 0),
            "completion_tokens": int(ct or 0),
            "cost_usd": float(cost or 0.0),
        }
        for model, count, cached, pt, ct, cost in (await session.execute(query)).all()
    ]


async def spent_since(session: AsyncSession, user_id: str, since: datetime) -> tuple[float | None, int | None]:
    """The user's cost and tokens since ``since`` (None for each when nothing was recorded)."""
    query = select(
        func.sum(UsageRecord.cost_usd), func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)
    ).where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
    cost, tokens = (await session.execute(query)).one()
    return cost, tokens


async def usage_per_key(session: AsyncSession, user_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per API key (None: without one) since ``since``: requests, tokens and cost (unrounded)."""
    query = (
        select(
            UsageRecord.key_id,
            func.count(),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.cost_usd),
        )
        .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
        .group_by(UsageRecord.key_id)
    )
    return [
        {
            "key_id": key_id,
            "requests": int(count),
            "prompt_tokens": int(pt or 0),
            "completion_tokens": int(ct or 0),
            "cost_usd": float(cost or 0.0),
        }
        for key_id, count, pt, ct, cost in (await session.execute(query)).all()
    ]


async def key_spent_since(session: AsyncSession, key_id: str, since: datetime) -> tuple[float | None, int | None]:
    """An API key's cost and tokens since ``since`` (None for each when nothing was recorded)."""
    query = select(
        func.sum(UsageRecord.cost_usd), func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)
    ).where(UsageRecord.key_id == key_id, UsageRecord.created_at >= since)
    cost, tokens = (await session.execute(query)).one()
    return cost, tokens
