"""The routes' dependencies: what the lifespan opened (on ``app.state``), the services built on the
request's database session, who is calling, and the request details a handler needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.apikeys import KeyGrant
from shared.app import state_dependency
from shared.db import database_of
from shared.tokens import CurrentPrincipal, current_user, unauthorized
from ultrai_documents.analysis.notify import Notifier
from ultrai_documents.analysis.runner import Runner
from ultrai_documents.analysis.service import AnalysisService
from ultrai_documents.documents import DocumentService
from ultrai_documents.extraction.sandbox import Extractor
from ultrai_documents.llm import ModelCatalog
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings


# ---- what the app and its lifespan hold -------------------------------------------------------
def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """The session factory, for what outlives the request's session (a streamed response)."""
    return database_of(request).sessions


Settings = Annotated[DocumentsSettings, Depends(state_dependency("settings", DocumentsSettings))]
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
Sandbox = Annotated[Extractor, Depends(state_dependency("extractor", Extractor))]
AnalysisRunner = Annotated[Runner, Depends(state_dependency("runner", Runner))]
Models = Annotated[ModelCatalog, Depends(state_dependency("models", ModelCatalog))]
News = Annotated[Notifier, Depends(state_dependency("notifier", Notifier))]


# ---- the services, on the request's database session ------------------------------------------
Repository = Annotated[DocumentsRepository, Depends(DocumentsRepository.on_request)]


def get_documents(
    repository: Repository, sessions: Sessions, settings: Settings, extractor: Sandbox
) -> DocumentService:
    return DocumentService(repository, sessions, settings, extractor)


def get_analyses(
    repository: Repository,
    sessions: Sessions,
    settings: Settings,
    runner: AnalysisRunner,
    models: Models,
    notifier: News,
) -> AnalysisService:
    return AnalysisService(repository, sessions, settings, runner, models, notifier)


Documents = Annotated[DocumentService, Depends(get_documents)]
Analyses = Annotated[AnalysisService, Depends(get_analyses)]


# ---- the caller and the request ---------------------------------------------------------------
async def get_key(principal: CurrentPrincipal) -> KeyGrant | None:
    """The API key the request was made with; None for an access token."""
    return principal.key


def get_owner(principal: CurrentPrincipal) -> str:
    """The user the request acts for (with a user's token, or a service's on behalf of one)."""
    if principal.user_id is None:
        raise unauthorized()
    return principal.user_id


async def get_stream_owner(
    request: Request,
    analysis_id: str,
    analyses: Analyses,
    ticket: Annotated[
        str | None,
        Query(description="A ticket from POST .../ticket, for clients that cannot send Authorization"),
    ] = None,
) -> str:
    """The user following an analysis' events: from the Authorization header when there is one,
    otherwise from a single-use ``ticket`` (a browser's EventSource cannot send headers)."""
    if "authorization" in request.headers or ticket is None:
        return get_owner(await current_user(request))
    return await analyses.redeem(analysis_id, ticket)


def get_last_event_id(request: Request) -> int:
    """Where a reconnecting event stream resumes: its Last-Event-ID, or the start."""
    try:
        return int(request.headers.get("last-event-id", "0"))
    except ValueError:
        return 0


Owner = Annotated[str, Depends(get_owner)]
CallerKey = Annotated[KeyGrant | None, Depends(get_key)]
StreamOwner = Annotated[str, Depends(get_stream_owner)]
LastEventId = Annotated[int, Depends(get_last_event_id)]
