"""``GET /api/v1/llm/models``: the configured models, with provider, status and context window, and
whether each is an offline demo model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.errors import problem_responses
from ultrai_llm.catalog import DEMO_ONLY_HINT, NO_PROVIDER_HINT
from ultrai_llm.deps import Caller, LlmDep
from ultrai_llm.layers import virtual_models
from ultrai_llm.routes import PREFIX
from ultrai_llm.schemas import ModelsResponse

router = APIRouter(prefix=PREFIX, tags=["llm"])


@router.get(
    "/models",
    summary="The configured models, with provider, status and context window",
    response_model=ModelsResponse,
    responses=problem_responses(401),
)
async def models(_: Caller, llm: LlmDep) -> dict[str, Any]:
    listed = await llm.engine.model_statuses()
    detail = DEMO_ONLY_HINT if llm.engine.catalog.demo_only else None if listed else NO_PROVIDER_HINT
    return {"models": listed, "patterns": virtual_models(), "detail": detail}
