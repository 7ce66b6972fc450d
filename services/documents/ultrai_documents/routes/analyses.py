"""A document's analyses: start one, list them, read one, follow its progress, cancel it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from shared.errors import problem_responses
from ultrai_documents.deps import Analyses, CallerKey, LastEventId, Owner, StreamOwner
from ultrai_documents.schemas import PREFIX, AnalysisEstimate, AnalysisOut, AnalysisRequest, TicketOut, analysis_url

router = APIRouter(prefix=PREFIX + "/{document_id}/analyses", tags=["analyses"])


@router.post(
    "",
    status_code=202,
    response_model=AnalysisOut,
    summary="Start an analysis; answers 202 with its URL (or the stored result)",
    responses={
        200: {"model": AnalysisOut, "description": "The stored result of the same analysis (fresh=false)"},
        **problem_responses(401, 402, 403, 404, 413, 422, 429),
    },
)
async def create_analysis(
    response: Response, document_id: str, body: AnalysisRequest, owner: Owner, key: CallerKey, analyses: Analyses
) -> AnalysisOut:
    analysis, reused = await analyses.start(owner, document_id, body, key)
    response.headers["Location"] = analysis_url(analysis)
    if reused and analysis.status == "completed":
        response.status_code = 200
    return AnalysisOut.of(analysis, reused=reused)


@router.post(
    "/estimate",
    response_model=AnalysisEstimate,
    summary="What the analysis would cost, call and take, and whether it fits the budget, without any model call",
    description=(
        "The same body as starting the analysis, checked the same way. The orchestrate requests the "
        "analysis would make (one per model; a long document one per chunk and model, then one per model "
        "to combine the notes; one for the synthesis) are each estimated by the llm service "
        "(`POST /api/v1/llm/orchestrate/estimate`) for the caller, and summed. Nothing is stored and no "
        "model is called. Starting an analysis whose estimate does not fit the budget is refused with 402."
    ),
    responses=problem_responses(400, 401, 402, 403, 404, 413, 422, 503),
)
async def estimate_analysis(
    document_id: str, body: AnalysisRequest, owner: Owner, key: CallerKey, analyses: Analyses
) -> dict[str, Any]:
    return await analyses.estimate(owner, document_id, body, key)


@router.get(
    "",
    response_model=list[AnalysisOut],
    summary="The document's analyses, newest first",
    responses=problem_responses(401, 404),
)
async def list_analyses(document_id: str, owner: Owner, analyses: Analyses) -> list[AnalysisOut]:
    return [AnalysisOut.of(a) for a in await analyses.history(owner, document_id)]


@router.get(
    "/{analysis_id}",
    response_model=AnalysisOut,
    summary="An analysis' status and, once completed, its result",
    responses=problem_responses(401, 404),
)
async def get_analysis(document_id: str, analysis_id: str, owner: Owner, analyses: Analyses) -> AnalysisOut:
    return AnalysisOut.of(await analyses.get(owner, document_id, analysis_id))


@router.post(
    "/{analysis_id}/ticket",
    response_model=TicketOut,
    summary="A short-lived, single-use ticket to follow the analysis' events without an Authorization header",
    responses=problem_responses(401, 404),
)
async def analysis_ticket(
    response: Response, document_id: str, analysis_id: str, owner: Owner, analyses: Analyses
) -> TicketOut:
    ticket, expires_in = await analyses.ticket(owner, document_id, analysis_id)
    response.headers["Cache-Control"] = "no-store"
    return TicketOut(ticket=ticket, expires_in=expires_in)


@router.post(
    "/{analysis_id}/cancel",
    response_model=AnalysisOut,
    summary="Stop a queued or running analysis",
    description=(
        "The analysis becomes `cancelled` at once and its event stream ends with a `cancelled` event. "
        "A queued analysis never starts; a running one makes no further model call, and its calls in "
        "flight are abandoned. What it had already spent stays recorded in its usage fields. An "
        "analysis that has already ended is a 409."
    ),
    responses=problem_responses(401, 404, 409),
)
async def cancel_analysis(document_id: str, analysis_id: str, owner: Owner, analyses: Analyses) -> AnalysisOut:
    return AnalysisOut.of(await analyses.cancel(owner, document_id, analysis_id))


@router.get(
    "/{analysis_id}/events",
    summary="An analysis' progress as server-sent events (status, stage, progress, model, synthesis, completed/failed)",
    description=(
        "Events, each with an `id` (send it back as `Last-Event-ID` to resume): `status` (queued, "
        "running), `stage` (extraction, models, synthesis), `progress` (a model's map step over a long "
        "document), `model` (one model's outcome: model, status, error, tokens, cost, latency), "
        "`synthesis` (the synthesis model's outcome, same fields, when the analysis names one and a "
        "model succeeded), then `completed`, `failed` or `cancelled`, each as soon as it is recorded. "
        "The texts are in the analysis' result. "
        "Authenticate with the Authorization header, or, where no header can be sent (a browser's "
        "EventSource), with `?ticket=` from `POST .../ticket`: valid once, for this analysis only."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(401, 404)},
)
async def analysis_events(
    document_id: str, analysis_id: str, owner: StreamOwner, analyses: Analyses, last_event_id: LastEventId
) -> Response:
    return StreamingResponse(
        await analyses.events(owner, document_id, analysis_id, last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
