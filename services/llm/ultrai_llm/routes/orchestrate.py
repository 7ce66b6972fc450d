"""``POST /api/v1/llm/orchestrate``: one prompt to several models (JSON, or server-sent events); and
``/orchestrate/estimate``, what it would cost before any call (``ultrai_llm.estimate``);
``/api/v1/llm/orchestrate/ws``, the same over a WebSocket, which the client can cancel
(``ultrai_llm.sockets``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse, Response

from shared.errors import problem_responses
from ultrai_llm.conversation_runs import execute_turn, plan_turn
from ultrai_llm.deps import LlmDep, UserId, VerifierDep
from ultrai_llm.estimate import check_affordable, estimate
from ultrai_llm.routes import PREFIX
from ultrai_llm.schemas import EstimateResponse, OrchestrateRequest, OrchestrateResponse
from ultrai_llm.sockets import serve_orchestration
from ultrai_llm.streaming import Emit, event_stream, sse

router = APIRouter(prefix=PREFIX, tags=["llm"])


@router.post(
    "/orchestrate",
    summary="One prompt to several models: parallel, peer_review, synthesis or ranked (JSON, or SSE with stream)",
    response_model=OrchestrateResponse,
    responses={
        **problem_responses(400, 401, 402, 404, 409, 413, 422, 429, 502, 503),
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    },
)
async def orchestrate(body: OrchestrateRequest, user_id: UserId, llm: LlmDep) -> Response:
    plan = await plan_turn(llm, body, user_id)
    await check_affordable(llm, plan, user_id)

    async def run(emit: Emit | None) -> dict[str, Any]:
        return await execute_turn(llm, plan, body, user_id, emit)

    if body.stream:
        return await event_stream(run, sse)
    # Built by us to the contract: answered as is, without a second validation against the model.
    return JSONResponse(await run(None))


@router.post(
    "/orchestrate/estimate",
    summary="What an orchestration would cost and take, and whether it fits the budget, without any call",
    response_model=EstimateResponse,
    responses=problem_responses(400, 401, 404, 409, 413, 422, 503),
)
async def orchestrate_estimate(body: OrchestrateRequest, user_id: UserId, llm: LlmDep) -> Response:
    plan = await plan_turn(llm, body, user_id)
    # Built by us to the contract (tests/llm/test_estimate.py checks it): answered as is.
    return JSONResponse(await estimate(llm, plan, user_id))


# Not in the OpenAPI document (it has no WebSocket routes); the protocol is in ultrai_llm.sockets.
@router.websocket("/orchestrate/ws", name="orchestrate_socket")
async def orchestrate_socket(websocket: WebSocket, llm: LlmDep, verifier: VerifierDep) -> None:
    await serve_orchestration(websocket, llm, verifier)
