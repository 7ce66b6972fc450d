"""``GET /api/v1/llm/usage``: the caller's tokens and cost per model, per API key and per UTC day, and
their budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from shared.errors import problem_responses
from ultrai_llm.deps import LlmDep, UserId
from ultrai_llm.routes import PREFIX
from ultrai_llm.schemas import UsageResponse

router = APIRouter(prefix=PREFIX, tags=["llm"])


@router.get(
    "/usage",
    summary="Your tokens and cost per model, per API key and per day, and your budget",
    response_model=UsageResponse,
    responses=problem_responses(401, 422),
)
async def usage(
    user_id: UserId,
    llm: LlmDep,
    days: Annotated[int, Query(ge=1, le=366, description="How many days back")] = 30,
) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=days)
    summary = await llm.usage.summary(user_id, since)
    spent_usd, spent_tokens = await llm.usage.spent_today(user_id)
    return {
        "user_id": user_id,
        "since": since.isoformat(timespec="seconds"),
        **summary,
        "budget": {**llm.usage.budget(), "spent_usd_today": round(spent_usd, 8), "spent_tokens_today": spent_tokens},
    }
