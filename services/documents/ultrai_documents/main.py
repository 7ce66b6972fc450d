"""The documents service's application: upload, extraction, storage and analyses."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from shared.app import create_app
from shared.db import Database
from shared.erasure import Erase, ErasureSweeper
from shared.settings import load_settings
from shared.tokens import ServiceTokenSource, TokenVerifier
from ultrai_documents.analysis.analyst import Analyst
from ultrai_documents.analysis.metrics import QueueMetrics
from ultrai_documents.analysis.notify import notifier_for
from ultrai_documents.analysis.runner import (
    InProcessRunner,
    QueueRunner,
    Runner,
    analysis_queue,
    resubmit_unfinished,
)
from ultrai_documents.extraction.base import Limits
from ultrai_documents.extraction.sandbox import Extractor
from ultrai_documents.llm import ModelCatalog, llm_client, llm_health_check
from ultrai_documents.models import utcnow
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.routes import DIRECTORY, ROUTERS
from ultrai_documents.schemas import PREFIX
from ultrai_documents.settings import DocumentsSettings
from ultrai_documents.worker import consume_in_process

SERVICE = "documents"
MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: DocumentsSettings | None = None, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """The app; ``verifier`` replaces the one that fetches auth's keys (the tests bring their own)."""
    settings = settings or load_settings(DocumentsSettings, SERVICE)
    upload_limit = settings.max_upload_bytes + settings.upload_overhead_bytes
    app = create_app(
        SERVICE,
        settings,
        description="Upload, type detection, text extraction, chunking, storage and multi-model analyses.",
        directory=DIRECTORY,
        lifespan=lambda app: _lifespan(app, settings, verifier),
        migrations=MIGRATIONS,
        # The upload route alone takes large bodies; every other route keeps the 1 MB default
        # (the longer prefix wins, so /api/v1/documents/... is capped at 1 MB).
        body_limits={PREFIX: upload_limit, PREFIX + "/": 1_048_576},
    )
    for router in ROUTERS:
        app.include_router(router)
    return app


def extractor_for(settings: DocumentsSettings) -> Extractor:
    return Extractor(
        Limits.of(settings),
        memory_mb=settings.extract_memory_mb,
        cpu_seconds=settings.extract_cpu_seconds,
        timeout=settings.extract_timeout_seconds,
        concurrency=settings.extract_concurrency,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI, settings: DocumentsSettings, verifier: TokenVerifier | None) -> AsyncIterator[None]:
    """Opens what the routes use (on ``app.state``: verifier, extractor, llm, models, notifier,
    runner) and submits the analyses nobody is running."""
    boot = utcnow()
    uploads = settings.upload_folder
    shutil.rmtree(uploads, ignore_errors=True)
    uploads.mkdir(parents=True, exist_ok=True)
    app.state.verifier = token_verifier = verifier or TokenVerifier(settings, SERVICE)
    if verifier is None:
        token_verifier.start()
    app.state.extractor = extractor_for(settings)
    tokens = ServiceTokenSource(settings, SERVICE, "llm")
    app.state.llm = llm = llm_client(settings, tokens)
    app.state.models = models = ModelCatalog(llm)
    db: Database = app.state.db
    app.state.notifier = notifier = notifier_for(
        settings.redis_url, settings.redis_key_prefix, settings.sse_poll_seconds, settings.sse_fallback_seconds
    )
    await notifier.start()
    analyst = Analyst(db.sessions, llm, settings, models, notifier)
    runner: Runner
    consumer: asyncio.Task[None] | None = None
    queue_metrics: QueueMetrics | None = None
    if settings.uses_queue:
        queue_runner = QueueRunner(analysis_queue(settings), settings)
        await queue_runner.start()
        runner = queue_runner
        # The queue's depth and what the workers recorded, read when /metrics is scraped.
        queue_metrics = QueueMetrics(queue_runner.queue, settings.redis_key_prefix)
        app.state.metric_sources.append(queue_metrics.families)
        if settings.analysis_web_consumes:
            consumer = await consume_in_process(queue_runner.queue, analyst, settings)
        # The queue's sweep finds the jobs of dead workers: nothing running is requeued here.
        silent_since = None
    else:
        in_process = InProcessRunner(
            analyst.run, settings.analysis_workers, sessions=db.sessions, lease_seconds=settings.analysis_lease_seconds
        )
        in_process.start()
        runner = in_process
        silent_since = boot - timedelta(seconds=settings.analysis_lease_seconds)
    app.state.runner = runner
    app.state.health.add(llm_health_check(llm))
    await resubmit_unfinished(db.sessions, runner, silent_since)
    # The documents and analyses of accounts auth has deleted (shared/erasure.py).
    app.state.erasures = erasures = ErasureSweeper(settings, SERVICE, owners_eraser(db))
    erasures.start()
    try:
        yield
    finally:
        await erasures.aclose()
        if consumer is not None:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        if queue_metrics is not None:
            app.state.metric_sources.remove(queue_metrics.families)
        await runner.aclose()
        await notifier.aclose()
        await llm.aclose()
        await tokens.aclose()
        if verifier is None:
            await token_verifier.aclose()
        shutil.rmtree(uploads, ignore_errors=True)


def owners_eraser(db: Database) -> Erase:
    """Erases everything held of deleted accounts, a batch in one transaction."""

    async def erase(user_ids: list[str]) -> None:
        async with db.sessions() as session:
            repository = DocumentsRepository(session)
            await repository.erase_owners(user_ids)
            await repository.commit()

    return erase


app = build()
