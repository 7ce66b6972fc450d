"""The queries on this service's table (``llm_usage``): every read and write of it is here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ultrai_llm.models import UsageRecord


async def add_usage(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write recorded calls (``UsageRecord`` columns) in one statement, and commit."""
    await session.execute(insert(UsageRecord), rows)
    await session.commit()


async def erase_usage(session: AsyncSession, user_ids: list[str]) -> None:
    """Delete every recorded call of these users (deleted accounts); not committed."""
    await session.execute(delete(UsageRecord).where(UsageRecord.user_id.in_(user_ids)))


async def usage_per_model(session: AsyncSession, user_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per model since ``since``: its requests, cached requests, tokens and cost (unrounded)."""
    return await _usage_by(session, user_id, since, {"model": UsageRecord.model}, cached=True)


async def spent_since(session: AsyncSession, user_id: str, since: datetime) -> tuple[float | None, int | None]:
    """The user's cost and tokens since ``since`` (None for each when nothing was recorded)."""
    return await _spent(session, UsageRecord.user_id == user_id, since)


async def usage_per_key(session: AsyncSession, user_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per API key (None: without one) since ``since``: requests, tokens and cost (unrounded)."""
    return await _usage_by(session, user_id, since, {"key_id": UsageRecord.key_id}, cached=False)


async def usage_per_day(session: AsyncSession, user_id: str, since: datetime) -> list[dict[str, Any]]:
    """Per UTC day ("YYYY-MM-DD") and model since ``since``, oldest first: requests, tokens and cost
    (unrounded)."""
    groups = {"day": _utc_day(session, UsageRecord.created_at), "model": UsageRecord.model}
    return await _usage_by(session, user_id, since, groups, cached=False)


def _utc_day(session: AsyncSession, column: Any) -> Any:
    """The UTC calendar day of a timestamp column as "YYYY-MM-DD". PostgreSQL converts the stored
    instant to UTC; SQLite stores the UTC time written (``datetime.now(UTC)``) as text."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


async def _usage_by(
    session: AsyncSession, user_id: str, since: datetime, groups: dict[str, Any], *, cached: bool
) -> list[dict[str, Any]]:
    """The user's usage since ``since`` grouped by the ``groups`` columns (answered under their
    names), in the order of those columns."""
    columns = list(groups.values())
    sums = [
        func.count(),
        func.sum(case((UsageRecord.cached, 1), else_=0)),
        func.sum(UsageRecord.prompt_tokens),
        func.sum(UsageRecord.completion_tokens),
        func.sum(UsageRecord.cost_usd),
    ]
    query = (
        select(*columns, *sums)
        .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)
        .group_by(*columns)
        .order_by(*columns)
    )
    rows = []
    for values in (await session.execute(query)).all():
        count, cached_count, pt, ct, cost = values[len(columns) :]
        row: dict[str, Any] = dict(zip(groups, values[: len(columns)], strict=True))
        row["requests"] = int(count)
        if cached:
            row["cached"] = int(cached_count or 0)
        row |= {"prompt_tokens": int(pt or 0), "completion_tokens": int(ct or 0), "cost_usd": float(cost or 0.0)}
        rows.append(row)
    return rows


async def key_spent_since(session: AsyncSession, key_id: str, since: datetime) -> tuple[float | None, int | None]:
    """An API key's cost and tokens since ``since`` (None for each when nothing was recorded)."""
    return await _spent(session, UsageRecord.key_id == key_id, since)


async def _spent(session: AsyncSession, whose: Any, since: datetime) -> tuple[float | None, int | None]:
    query = select(
        func.sum(UsageRecord.cost_usd), func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens)
    ).where(whose, UsageRecord.created_at >= since)
    cost, tokens = (await session.execute(query)).one()
    return cost, tokens
