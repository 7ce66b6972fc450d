"""Usage per UTC day and model (``daily`` of GET /api/v1/llm/usage), on SQLite and on PostgreSQL:
the stored rows and those still buffered, grouped by the UTC day whatever the session's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.db import Database
from tests.llm.conftest import settings
from ultrai_llm.engine import CallResult
from ultrai_llm.repository import add_usage, usage_per_day
from ultrai_llm.usage import UsageStore


@pytest.fixture
def store(migrated_db: Database) -> UsageStore:
    return UsageStore(migrated_db, settings())


def row(user: str, model: str, at: datetime, prompt: int, completion: int, cost: float) -> dict:
    return {
        "user_id": user,
        "model": model,
        "stage": "answer",
        "endpoint": "chat",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost,
        "cached": False,
        "ok": True,
        "request_id": None,
        "created_at": at,
        "key_id": None,
    }


async def test_usage_per_utc_day_and_model(store: UsageStore):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = [(today - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(4)]
    rows = [
        # The last second of a day and the first of the next fall on two days.
        row("u", "alpha", today - timedelta(days=2, seconds=1), 10, 5, 0.001),
        row("u", "alpha", today - timedelta(days=2) + timedelta(seconds=1), 20, 6, 0.002),
        row("u", "alpha", today - timedelta(days=2) + timedelta(hours=23), 30, 7, 0.003),
        row("u", "beta", today - timedelta(days=2) + timedelta(hours=12), 1, 1, 0.0),
        row("u", "alpha", today - timedelta(days=1) + timedelta(hours=6), 4, 4, 0.0005),
        # Another user's call, and one older than the window.
        row("v", "alpha", today - timedelta(days=1), 100, 100, 1.0),
        row("u", "alpha", today - timedelta(days=30), 100, 100, 1.0),
    ]
    async with store.db.sessions() as session:
        await add_usage(session, rows)
        if store.db.postgres:
            # A session far from UTC: 23:59:59 UTC is already the next day there.
            await session.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))
        daily = await usage_per_day(session, "u", today - timedelta(days=3))
    assert [(d["day"], d["model"], d["requests"], d["prompt_tokens"], d["completion_tokens"]) for d in daily] == [
        (day[3], "alpha", 1, 10, 5),
        (day[2], "alpha", 2, 50, 13),
        (day[2], "beta", 1, 1, 1),
        (day[1], "alpha", 1, 4, 4),
    ]
    assert [d["cost_usd"] for d in daily] == pytest.approx([0.001, 0.005, 0.0, 0.0005])

    # Calls recorded but not yet written count too, on today's row; the summary rounds the cost.
    store.record("u", "chat", [CallResult("alpha", "answer", text="a", prompt_tokens=3, completion_tokens=2)])
    store.record("u", "chat", [CallResult("gamma", "answer", text="g", prompt_tokens=1, completion_tokens=1)])
    summary = await store.summary("u", today - timedelta(days=3))
    assert [(d["day"], d["model"], d["requests"]) for d in summary["daily"]] == [
        (day[3], "alpha", 1),
        (day[2], "alpha", 2),
        (day[2], "beta", 1),
        (day[1], "alpha", 1),
        (day[0], "alpha", 1),
        (day[0], "gamma", 1),
    ]
    assert summary["daily"][1]["cost_usd"] == pytest.approx(0.005)
    await store.flush()
    assert (await store.summary("u", today - timedelta(days=3)))["daily"] == summary["daily"]
