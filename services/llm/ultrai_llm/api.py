"""The llm API: /api/v1/llm/models, /orchestrate (JSON or server-sent events) and /usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import JSONResponse, Response

from shared.errors import problem_responses
from shared.tokens import ON_BEHALF_HEADER, SERVICE_TYP, Principal, bearer_token, current_service, current_user
from ultrai_llm.catalog import NO_PROVIDER_HINT, PATTERNS, VIRTUAL_PREFIX
from ultrai_llm.engine import Engine
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.schemas import ModelsResponse, OrchestrateRequest, OrchestrateResponse, UsageResponse
from ultrai_llm.streaming import Emit, event_stream, sse
from ultrai_llm.usage import UsageStore

PREFIX = "/api/v1/llm"
router = APIRouter(prefix=PREFIX, tags=["llm"])


@dataclass
class Llm:
    """What the routes use, created in the lifespan (``app.state.llm``)."""

    engine: Engine
    orchestrator: Orchestrator
    usage: UsageStore


def llm_of(request: Request) -> Llm:
    return request.app.state.llm


async def user_or_service(request: Request) -> Principal:
    """A user, or a service acting for one; or, for what concerns no user (the model list), a service
    token for this service on its own."""
    token = bearer_token(request)
    if token and not request.headers.get(ON_BEHALF_HEADER):
        try:
            typ = jwt.get_unverified_header(token).get("typ")
        except jwt.PyJWTError:
            typ = None
        if typ == SERVICE_TYP:
            return await current_service(request)
    return await current_user(request)


async def model_statuses(llm: Llm) -> list[dict[str, Any]]:
    """Each model as listed; "cooling_down" while litellm has every deployment of it in cooldown."""
    cooling: set[str] = set()
    router = llm.engine.router
    if router is not None:
        from litellm.router_utils.cooldown_handlers import async_get_cooldown_deployments

        try:
            down = set(await async_get_cooldown_deployments(router, None))
        except Exception:  # the status is informative; never fail the listing for it
            down = set()
        if down:
            groups: dict[str, list[str]] = {}
            for entry in router.model_list:
                groups.setdefault(entry["model_name"], []).append(entry.get("model_info", {}).get("id"))
            cooling = {name for name, ids in groups.items() if all(i in down for i in ids)}
    return [
        spec.public("cooling_down" if name in cooling else "available")
        for name, spec in llm.engine.catalog.specs.items()
    ]


@router.get(
    "/models",
    summary="The configured models, with provider, status and context window",
    response_model=ModelsResponse,
    responses=problem_responses(401),
)
async def models(request: Request, _: Principal = Depends(user_or_service)) -> dict[str, Any]:
    llm = llm_of(request)
    listed = await model_statuses(llm)
    return {
        "models": listed,
        "patterns": [VIRTUAL_PREFIX + p for p in PATTERNS],
        "detail": None if listed else NO_PROVIDER_HINT,
    }


def render_orchestration(event: str, data: dict[str, Any]) -> bytes:
    return sse(event, data)


@router.post(
    "/orchestrate",
    summary="One prompt to several models: parallel, peer_review or synthesis (JSON, or SSE with stream)",
    response_model=OrchestrateResponse,
    responses={
        **problem_responses(400, 401, 402, 413, 422, 429, 502, 503),
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    },
)
async def orchestrate(body: OrchestrateRequest, request: Request, user: Principal = Depends(current_user)) -> Any:
    llm = llm_of(request)
    plan = await llm.orchestrator.plan(body, user.user_id)
    await llm.usage.check_budget(user.user_id)

    async def run(emit: Emit | None) -> dict[str, Any]:
        return await llm.orchestrator.execute(plan, emit)

    if body.stream:
        return await event_stream(run, render_orchestration)
    # Built by us to the contract: answered as is, without a second validation against the model.
    return JSONResponse(await run(None))


@router.get(
    "/usage",
    summary="Your tokens and cost per model, and your budget",
    response_model=UsageResponse,
    responses=problem_responses(401, 422),
)
async def usage(
    request: Request,
    days: int = Query(30, ge=1, le=366, description="How many days back"),
    user: Principal = Depends(current_user),
) -> Response | dict[str, Any]:
    llm = llm_of(request)
    since = datetime.now(UTC) - timedelta(days=days)
    summary = await llm.usage.summary(user.user_id, since)
    spent_usd, spent_tokens = await llm.usage.spent_today(user.user_id)
    return {
        "user_id": user.user_id,
        "since": since.isoformat(timespec="seconds"),
        **summary,
        "budget": {**llm.usage.budget(), "spent_usd_today": round(spent_usd, 8), "spent_tokens_today": spent_tokens},
    }
