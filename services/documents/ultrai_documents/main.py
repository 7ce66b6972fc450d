"""The documents service's application: upload, extraction, storage and analyses."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import or_, select, update

from shared.app import create_app
from shared.client import ServiceClient
from shared.errors import ProblemError, problem_responses
from shared.health import Check, CheckResult
from shared.settings import load_settings
from shared.tokens import Principal, ServiceTokenSource, TokenVerifier, current_user
from ultrai_documents import store
from ultrai_documents.analyses import (
    TERMINAL,
    AnalysisRequest,
    Analyst,
    InProcessRunner,
    Runner,
    active_count,
    params_hash,
)
from ultrai_documents.extraction.base import ExtractionError, Limits
from ultrai_documents.extraction.sandbox import Extractor
from ultrai_documents.models import Analysis, AnalysisEvent, Chunk, Document, utcnow
from ultrai_documents.settings import DocumentsSettings
from ultrai_documents.upload import clean_filename, content_disposition, receive_upload

SERVICE = "documents"
PREFIX = "/api/v1/documents"
DIRECTORY = {
    f"POST {PREFIX}": "upload a document (multipart field 'file')",
    f"GET {PREFIX}": "your documents, newest first (cursor pagination)",
    f"GET {PREFIX}/{{id}}": "one document's metadata",
    f"GET {PREFIX}/{{id}}/text": "its extracted text (UTF-8)",
    f"GET {PREFIX}/{{id}}/chunks": "its chunks",
    f"GET {PREFIX}/{{id}}/download": "the original file",
    f"DELETE {PREFIX}/{{id}}": "delete it with its chunks and analyses",
    f"POST {PREFIX}/{{id}}/analyses": "start an analysis (202 + URL)",
    f"GET {PREFIX}/{{id}}/analyses/{{analysis_id}}": "an analysis' status and result",
    f"GET {PREFIX}/{{id}}/analyses/{{analysis_id}}/events": "its progress as server-sent events",
}
log = logging.getLogger("ultrai_documents")


class DocumentOut(BaseModel):
    id: str
    name: str
    kind: str
    media_type: str
    size_bytes: int
    sha256: str
    page_count: int | None
    encoding: str | None
    char_count: int
    token_count: int
    chunk_count: int
    created_at: datetime
    links: dict[str, str]


class DocumentCreated(DocumentOut):
    duplicate: bool = False


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class ChunkOut(BaseModel):
    seq: int
    start_char: int
    end_char: int
    token_count: int
    text: str


class AnalysisOut(BaseModel):
    id: str
    document_id: str
    kind: str
    params: dict[str, Any]
    status: str
    stage: str | None
    result: dict[str, Any] | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reused: bool = False
    links: dict[str, str]


def _doc_out(doc: Document, cls: type[DocumentOut] = DocumentOut, **extra: Any) -> DocumentOut:
    base = f"{PREFIX}/{doc.id}"
    return cls(
        id=doc.id,
        name=doc.name,
        kind=doc.kind,
        media_type=doc.media_type,
        size_bytes=doc.size_bytes,
        sha256=doc.sha256,
        page_count=doc.page_count,
        encoding=doc.encoding,
        char_count=doc.char_count,
        token_count=doc.token_count,
        chunk_count=doc.chunk_count,
        created_at=doc.created_at,
        links={
            "self": base,
            "text": f"{base}/text",
            "download": f"{base}/download",
            "analyses": f"{base}/analyses",
        },
        **extra,
    )


def _analysis_url(a: Analysis) -> str:
    return f"{PREFIX}/{a.document_id}/analyses/{a.id}"


def _analysis_out(a: Analysis, reused: bool = False) -> AnalysisOut:
    url = _analysis_url(a)
    return AnalysisOut(
        id=a.id,
        document_id=a.document_id,
        kind=a.kind,
        params=a.params,
        status=a.status,
        stage=a.stage,
        result=a.result,
        error=a.error,
        prompt_tokens=a.prompt_tokens,
        completion_tokens=a.completion_tokens,
        cost_usd=a.cost_usd,
        created_at=a.created_at,
        started_at=a.started_at,
        finished_at=a.finished_at,
        reused=reused,
        links={"self": url, "events": f"{url}/events", "document": f"{PREFIX}/{a.document_id}"},
    )


def build(settings: DocumentsSettings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    settings = settings or load_settings(DocumentsSettings, SERVICE)
    tmp_root = Path(settings.data_dir) / "documents-tmp"
    limits = Limits(
        max_text_chars=settings.max_text_chars,
        docx_max_entries=settings.docx_max_entries,
        docx_max_uncompressed_bytes=settings.docx_max_uncompressed_bytes,
        docx_max_ratio=settings.docx_max_ratio,
        docx_max_part_bytes=settings.docx_max_part_bytes,
        pdf_max_pages=settings.pdf_max_pages,
        pdf_max_stream_bytes=settings.pdf_max_stream_bytes,
        max_nesting_depth=settings.max_nesting_depth,
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap_tokens=settings.chunk_overlap_tokens,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        boot = utcnow()
        shutil.rmtree(tmp_root, ignore_errors=True)
        tmp_root.mkdir(parents=True, exist_ok=True)
        app.state.verifier = verifier or TokenVerifier(settings, SERVICE)
        if verifier is None:
            app.state.verifier.start()
        app.state.extractor = Extractor(
            limits,
            memory_mb=settings.extract_memory_mb,
            cpu_seconds=settings.extract_cpu_seconds,
            timeout=settings.extract_timeout_seconds,
            concurrency=settings.extract_concurrency,
        )
        tokens = ServiceTokenSource(settings, SERVICE, "llm")
        llm = ServiceClient(
            "llm",
            settings.llm_url,
            token=tokens,
            timeout=httpx.Timeout(connect=2.0, read=settings.llm_timeout_seconds, write=30.0, pool=10.0),
        )
        app.state.llm = llm
        analyst = Analyst(app.state.db.sessions, llm, settings)
        runner: Runner = InProcessRunner(analyst.run, settings.analysis_workers)
        app.state.runner = runner
        app.state.health.add(_llm_check(llm))
        # Work that a previous process left unfinished is picked up again: analyses it had started
        # go back to the queue, and everything queued is submitted. Several processes starting at
        # once may submit the same analysis; the claim in the work lets one of them run it.
        async with app.state.db.sessions() as session:
            await session.execute(
                update(Analysis)
                .where(Analysis.status == "running", or_(Analysis.started_at.is_(None), Analysis.started_at < boot))
                .values(status="queued")
            )
            await session.commit()
            pending = (await session.scalars(select(Analysis.id).where(Analysis.status == "queued"))).all()
        for analysis_id in pending:
            await runner.submit(analysis_id)
        try:
            yield
        finally:
            await runner.aclose()
            await llm.aclose()
            await tokens.aclose()
            if verifier is None:
                await app.state.verifier.aclose()
            shutil.rmtree(tmp_root, ignore_errors=True)

    limit = settings.max_upload_bytes + settings.upload_overhead_bytes
    app = create_app(
        SERVICE,
        settings,
        description="Upload, type detection, text extraction, chunking, storage and multi-model analyses.",
        directory=DIRECTORY,
        lifespan=lifespan,
        migrations=Path(__file__).parent / "migrations",
        # The upload route alone takes large bodies; every other route keeps the 1 MB default
        # (the longer prefix wins, so /api/v1/documents/... is capped at 1 MB).
        body_limits={PREFIX: limit, PREFIX + "/": 1_048_576},
    )

    def sessions(request: Request):
        return request.app.state.db.sessions

    @app.post(
        PREFIX,
        status_code=201,
        response_model=DocumentCreated,
        summary="Upload a document (multipart/form-data, field 'file')",
        tags=["documents"],
        responses={
            200: {"model": DocumentCreated, "description": "The same bytes were uploaded before: that document"},
            **problem_responses(400, 401, 403, 413, 415, 422),
        },
    )
    async def upload(request: Request, response: Response, user: Principal = Depends(current_user)) -> DocumentCreated:
        owner = user.user_id
        makers = sessions(request)
        async with makers() as session:
            count, used = await store.usage(session, owner)
        if count >= settings.quota_max_documents:
            raise ProblemError(
                403, f"You have reached the limit of {settings.quota_max_documents} documents; delete some first."
            )
        up = await receive_upload(
            request,
            tmp_root,
            max_bytes=settings.max_upload_bytes,
            max_parts=settings.max_multipart_parts,
            max_field_bytes=settings.max_field_bytes,
        )
        text_path = up.path.with_suffix(".txt")
        try:
            name = clean_filename(up.filename, settings.max_filename_chars)
            async with makers() as session:
                existing = await store.find_duplicate(session, owner, up.sha256)
            if existing is not None:
                response.status_code = 200
                response.headers["Location"] = f"{PREFIX}/{existing.id}"
                return _doc_out(existing, DocumentCreated, duplicate=True)
            if used + up.size > settings.quota_max_bytes:
                raise ProblemError(
                    403, f"This file would take you past your storage limit of {settings.quota_max_bytes:,} bytes."
                )
            try:
                result = await request.app.state.extractor.extract(up.path, up.filename)
            except ExtractionError as exc:
                raise ProblemError(exc.status, exc.reason) from None
            doc, created = await store.save(makers, owner, name, up, result)
        finally:
            await asyncio.to_thread(up.path.unlink, True)
            await asyncio.to_thread(text_path.unlink, True)
        response.headers["Location"] = f"{PREFIX}/{doc.id}"
        if not created:
            response.status_code = 200
        return _doc_out(doc, DocumentCreated, duplicate=not created)

    @app.get(
        PREFIX,
        response_model=DocumentPage,
        summary="Your documents, newest first",
        tags=["documents"],
        responses=problem_responses(400, 401),
    )
    async def list_documents(
        request: Request,
        limit: int = Query(20, ge=1, le=100),
        cursor: str | None = Query(None, max_length=200),
        user: Principal = Depends(current_user),
    ) -> DocumentPage:
        async with sessions(request)() as session:
            rows, next_cursor = await store.list_page(session, user.user_id, limit, cursor)
        return DocumentPage(items=[_doc_out(d) for d in rows], next_cursor=next_cursor)

    @app.get(
        PREFIX + "/{document_id}",
        response_model=DocumentOut,
        summary="One document's metadata",
        tags=["documents"],
        responses=problem_responses(401, 404),
    )
    async def get_document(request: Request, document_id: str, user: Principal = Depends(current_user)) -> DocumentOut:
        async with sessions(request)() as session:
            return _doc_out(await store.owned(session, user.user_id, document_id))

    @app.get(
        PREFIX + "/{document_id}/text",
        summary="The extracted text (UTF-8)",
        tags=["documents"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 404)},
    )
    async def get_text(request: Request, document_id: str, user: Principal = Depends(current_user)) -> Response:
        async with sessions(request)() as session:
            await store.owned(session, user.user_id, document_id)
        return StreamingResponse(
            store.stream_text(sessions(request), document_id), media_type="text/plain; charset=utf-8"
        )

    @app.get(
        PREFIX + "/{document_id}/chunks",
        response_model=list[ChunkOut],
        summary="The document's chunks (token-aware, overlapping)",
        tags=["documents"],
        responses=problem_responses(401, 404),
    )
    async def get_chunks(
        request: Request,
        document_id: str,
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=500),
        user: Principal = Depends(current_user),
    ) -> list[ChunkOut]:
        async with sessions(request)() as session:
            await store.owned(session, user.user_id, document_id)
            rows = (
                await session.scalars(
                    select(Chunk)
                    .where(Chunk.document_id == document_id)
                    .order_by(Chunk.seq)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
        return [
            ChunkOut(seq=c.seq, start_char=c.start_char, end_char=c.end_char, token_count=c.token_count, text=c.text)
            for c in rows
        ]

    @app.get(
        PREFIX + "/{document_id}/download",
        summary="The original file",
        tags=["documents"],
        response_class=StreamingResponse,
        responses=problem_responses(401, 404),
    )
    async def download(request: Request, document_id: str, user: Principal = Depends(current_user)) -> Response:
        async with sessions(request)() as session:
            doc = await store.owned(session, user.user_id, document_id)
        return StreamingResponse(
            store.stream_original(sessions(request), doc.id),
            media_type=doc.media_type,
            headers={
                "Content-Disposition": content_disposition(doc.name),
                "Content-Length": str(doc.size_bytes),
                # X-Content-Type-Options: nosniff and a default-src 'none' CSP come from the shared
                # middleware on every response; a sandbox keeps an HTML original inert if opened.
                "Cache-Control": "private, no-store",
                "Content-Security-Policy": "sandbox",
            },
        )

    @app.delete(
        PREFIX + "/{document_id}",
        status_code=204,
        summary="Delete a document with its chunks and analyses",
        tags=["documents"],
        responses=problem_responses(401, 404),
    )
    async def delete_document(request: Request, document_id: str, user: Principal = Depends(current_user)) -> Response:
        async with sessions(request)() as session:
            doc = await store.owned(session, user.user_id, document_id)
            await store.delete_document(session, doc.id)
        return Response(status_code=204)

    # ------------------------------------------------------------------------------- analyses

    async def _default_models(request: Request) -> list[str]:
        if settings.analysis_default_models:
            return list(settings.analysis_default_models)
        try:
            resp = await request.app.state.llm.get("/api/v1/llm/models", timeout=5.0)
            names = [m["name"] for m in resp.json().get("models", []) if m.get("status", "available") != "unavailable"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, RuntimeError):
            names = []
        if not names:
            raise ProblemError(422, "Name the models to use in 'models' (no default models are configured).")
        return names[:3]

    @app.post(
        PREFIX + "/{document_id}/analyses",
        status_code=202,
        response_model=AnalysisOut,
        summary="Start an analysis; answers 202 with its URL (or the stored result)",
        tags=["analyses"],
        responses={
            200: {"model": AnalysisOut, "description": "The stored result of the same analysis (fresh=false)"},
            **problem_responses(401, 404, 413, 422, 429),
        },
    )
    async def create_analysis(
        request: Request,
        response: Response,
        document_id: str,
        body: AnalysisRequest,
        user: Principal = Depends(current_user),
    ) -> AnalysisOut:
        owner = user.user_id
        async with sessions(request)() as session:
            doc = await store.owned(session, owner, document_id)
        if doc.chunk_count > settings.analysis_max_chunks:
            raise ProblemError(
                422,
                f"The document is too long to analyse ({doc.chunk_count} chunks; the limit is "
                f"{settings.analysis_max_chunks}).",
            )
        models = list(dict.fromkeys(body.models)) if body.models else await _default_models(request)
        if len(models) > settings.analysis_max_models:
            raise ProblemError(422, f"Use at most {settings.analysis_max_models} models.")
        params = body.params(models, body.synthesis_model)
        digest = params_hash(params)
        async with sessions(request)() as session:
            if not body.fresh:
                previous = await session.scalar(
                    select(Analysis)
                    .where(
                        Analysis.document_id == doc.id,
                        Analysis.owner_id == owner,
                        Analysis.params_hash == digest,
                        Analysis.status.in_(("completed", "queued", "running")),
                    )
                    .order_by(Analysis.created_at.desc())
                    .limit(1)
                )
                if previous is not None:
                    response.headers["Location"] = _analysis_url(previous)
                    if previous.status == "completed":
                        response.status_code = 200
                    return _analysis_out(previous, reused=True)
            if await active_count(session, owner) >= settings.analysis_max_active_per_user:
                raise ProblemError(
                    429, "Too many analyses are running for you; wait for one to finish.", headers={"Retry-After": "5"}
                )
            analysis = Analysis(
                id=store.new_id(),
                document_id=doc.id,
                owner_id=owner,
                kind=body.kind,
                params=params,
                params_hash=digest,
                status="queued",
            )
            session.add(analysis)
            session.add(AnalysisEvent(analysis_id=analysis.id, event="status", data={"status": "queued"}))
            await session.commit()
        await request.app.state.runner.submit(analysis.id)
        response.headers["Location"] = _analysis_url(analysis)
        return _analysis_out(analysis)

    @app.get(
        PREFIX + "/{document_id}/analyses",
        response_model=list[AnalysisOut],
        summary="The document's analyses, newest first",
        tags=["analyses"],
        responses=problem_responses(401, 404),
    )
    async def list_analyses(request: Request, document_id: str, user: Principal = Depends(current_user)) -> list:
        async with sessions(request)() as session:
            doc = await store.owned(session, user.user_id, document_id)
            rows = (
                await session.scalars(
                    select(Analysis)
                    .where(Analysis.document_id == doc.id)
                    .order_by(Analysis.created_at.desc())
                    .limit(100)
                )
            ).all()
        return [_analysis_out(a) for a in rows]

    async def _owned_analysis(request: Request, owner: str, document_id: str, analysis_id: str) -> Analysis:
        async with sessions(request)() as session:
            await store.owned(session, owner, document_id)
            analysis = await session.scalar(
                select(Analysis).where(
                    Analysis.id == analysis_id, Analysis.document_id == document_id, Analysis.owner_id == owner
                )
            )
        if analysis is None:
            raise ProblemError(404, "No such analysis.")
        return analysis

    @app.get(
        PREFIX + "/{document_id}/analyses/{analysis_id}",
        response_model=AnalysisOut,
        summary="An analysis' status and, once completed, its result",
        tags=["analyses"],
        responses=problem_responses(401, 404),
    )
    async def get_analysis(
        request: Request, document_id: str, analysis_id: str, user: Principal = Depends(current_user)
    ) -> AnalysisOut:
        return _analysis_out(await _owned_analysis(request, user.user_id, document_id, analysis_id))

    @app.get(
        PREFIX + "/{document_id}/analyses/{analysis_id}/events",
        summary="An analysis' progress as server-sent events (status, stage, model, synthesis, completed/failed)",
        tags=["analyses"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(401, 404)},
    )
    async def analysis_events(
        request: Request, document_id: str, analysis_id: str, user: Principal = Depends(current_user)
    ) -> Response:
        await _owned_analysis(request, user.user_id, document_id, analysis_id)
        try:
            last_id = int(request.headers.get("last-event-id", "0"))
        except ValueError:
            last_id = 0
        makers = sessions(request)

        async def stream() -> AsyncIterator[bytes]:
            nonlocal last_id
            idle = 0.0
            while True:
                async with makers() as session:
                    # The status first: the final event commits with the final status, so once the
                    # status read is terminal, the events read next include the last one.
                    status = await session.scalar(select(Analysis.status).where(Analysis.id == analysis_id))
                    rows = (
                        await session.scalars(
                            select(AnalysisEvent)
                            .where(AnalysisEvent.analysis_id == analysis_id, AnalysisEvent.id > last_id)
                            .order_by(AnalysisEvent.id)
                            .limit(200)
                        )
                    ).all()
                for row in rows:
                    last_id = row.id
                    payload = json.dumps(row.data, separators=(",", ":"), ensure_ascii=False)
                    yield f"id: {row.id}\nevent: {row.event}\ndata: {payload}\n\n".encode()
                    if row.event in TERMINAL:
                        return
                if not rows:
                    if status is None or status in TERMINAL:
                        return
                    idle += settings.sse_poll_seconds
                    if idle >= 15:
                        idle = 0.0
                        yield b": keep-alive\n\n"
                    await asyncio.sleep(settings.sse_poll_seconds)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _llm_check(llm: ServiceClient) -> Check:
    async def probe() -> CheckResult:
        try:
            resp = await llm.http.get("/live", timeout=1.0, headers={"Authorization": ""})
        except httpx.HTTPError:
            return CheckResult("warn", "llm is unreachable; analyses wait for it")
        return CheckResult("pass" if resp.status_code == 200 else "warn")

    # Analyses need the llm service, but uploads and reads do not: never 'fail' for it.
    return Check("llm", probe, component_type="service", critical=False, timeout=1.5)


app = build()
