"""The OpenAI-compatible API: ``POST /v1/chat/completions`` (stream and not) and ``GET /v1/models``.

Any OpenAI client (the official SDK, LangChain, a frontend) uses it through the gateway with the
user's access token as its API key. The orchestration patterns appear as virtual models
(``ultrai/parallel``, ``ultrai/peer_review``, ``ultrai/synthesis``, and ``ultrai/rounds-2``,
``ultrai/samples-3`` and the like); see ``ultrai_llm.chat``. Errors
are problem+json with an OpenAI-style ``error`` member, which OpenAI clients read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from shared.errors import problem_responses
from ultrai_llm.chat import complete_chat
from ultrai_llm.deps import Caller, LlmDep, UserId
from ultrai_llm.openai_format import model_list
from ultrai_llm.schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get(
    "/models", summary="The models, OpenAI style (virtual ultrai/* models included)", responses=problem_responses(401)
)
async def list_models(_: Caller, llm: LlmDep) -> dict[str, Any]:
    return model_list(await llm.engine.model_statuses())


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions (stream and not); ultrai/* models orchestrate",
    response_model=None,
    responses={
        **problem_responses(400, 401, 402, 404, 413, 422, 429, 502, 503),
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    },
)
async def chat_completions(body: ChatCompletionRequest, user_id: UserId, llm: LlmDep) -> Response | dict[str, Any]:
    return await complete_chat(llm, body, user_id)
