"""A document's analyses: start one, list them, read one, follow its progress."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from shared.errors import problem_responses
from ultrai_documents.deps import Analyses, LastEventId, Owner
from ultrai_documents.schemas import PREFIX, AnalysisOut, AnalysisRequest, analysis_url

router = APIRouter(prefix=PREFIX + "/{document_id}/analyses", tags=["analyses"])


@router.post(
    "",
    status_code=202,
    response_model=AnalysisOut,
    summary="Start an analysis; answers 202 with its URL (or the stored result)",
    responses={
        200: {"model": AnalysisOut, "description": "The stored result of the same analysis (fresh=false)"},
        **problem_responses(401, 404, 413, 422, 429),
    },
)
async def create_analysis(
    response: Response, document_id: str, body: AnalysisRequest, owner: Owner, analyses: Analyses
) -> AnalysisOut:
    analysis, reused = await analyses.start(owner, document_id, body)
    response.headers["Location"] = analysis_url(analysis)
    if reused and analysis.status == "completed":
        response.status_code = 200
    return AnalysisOut.of(analysis, reused=reused)


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


@router.get(
    "/{analysis_id}/events",
    summary="An analysis' progress as server-sent events (status, stage, model, synthesis, completed/failed)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(401, 404)},
)
async def analysis_events(
    document_id: str, analysis_id: str, owner: Owner, analyses: Analyses, last_event_id: LastEventId
) -> Response:
    return StreamingResponse(
        await analyses.events(owner, document_id, analysis_id, last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
