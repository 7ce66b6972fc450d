"""``/api/v1/llm/conversations``: the caller's stored conversations (``ultrai_llm.conversations``):
create, list (newest first, cursor pagination), reopen with its turns, rename, delete. Another
user's conversation does not exist for the caller (404). An orchestration joins one with
``conversation_id`` in its body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from shared.errors import problem_responses
from ultrai_llm.conversation_schemas import (
    ConversationDetail,
    ConversationIn,
    ConversationOut,
    ConversationPage,
    ConversationRename,
)
from ultrai_llm.deps import LlmDep, UserId
from ultrai_llm.routes import PREFIX

router = APIRouter(prefix=f"{PREFIX}/conversations", tags=["llm"])
ConversationId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "",
    status_code=201,
    summary="A new conversation (optionally titled)",
    response_model=ConversationOut,
    responses=problem_responses(401, 403, 422),
)
async def create_conversation(user_id: UserId, llm: LlmDep, body: ConversationIn | None = None) -> dict[str, Any]:
    return await llm.conversations.create(user_id, body.title if body else None)


@router.get(
    "",
    summary="Your conversations, newest first (cursor pagination)",
    response_model=ConversationPage,
    responses=problem_responses(400, 401, 422),
)
async def list_conversations(
    user_id: UserId,
    llm: LlmDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    return await llm.conversations.page(user_id, limit, cursor)


@router.get(
    "/{conversation_id}",
    summary="A conversation with its turns: each prompt and its final answer, oldest first",
    response_model=ConversationDetail,
    responses=problem_responses(401, 404, 422),
)
async def get_conversation(conversation_id: ConversationId, user_id: UserId, llm: LlmDep) -> dict[str, Any]:
    return await llm.conversations.get(user_id, conversation_id)


@router.patch(
    "/{conversation_id}",
    summary="Rename a conversation (a blank title: untitled)",
    response_model=ConversationOut,
    responses=problem_responses(401, 404, 422),
)
async def rename_conversation(
    conversation_id: ConversationId, body: ConversationRename, user_id: UserId, llm: LlmDep
) -> dict[str, Any]:
    return await llm.conversations.rename(user_id, conversation_id, body.title)


@router.delete(
    "/{conversation_id}",
    status_code=204,
    summary="Delete a conversation and its turns",
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def delete_conversation(conversation_id: ConversationId, user_id: UserId, llm: LlmDep) -> Response:
    await llm.conversations.delete(user_id, conversation_id)
    return Response(status_code=204)
