"""The analysis worker: runs the analyses queued in Redis (SAQ), ``ANALYSIS_WORKERS`` at once.

    python -m ultrai_documents.worker

It shares the documents service's settings (``DATABASE_URL``, ``REDIS_URL``, ``LLM_URL``, ...) and
writes to its tables; it serves no HTTP. While it runs an analysis it beats the job's heartbeat
every third of ``ANALYSIS_HEARTBEAT_SECONDS``; a worker that stops beating (killed, frozen) has its
job swept by another worker's sweep (every ``ANALYSIS_SWEEP_SECONDS``) and delivered again, and the
next worker takes the analysis over from the answers already received. On SIGTERM it stops taking
jobs and gives the running ones ``ANALYSIS_SHUTDOWN_GRACE_SECONDS`` to finish; those that do not go
back to the queue.

``ANALYSIS_WEB_CONSUMES=true`` runs the same worker inside the documents web process instead
(``consume_in_process``), for the smallest deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator

from saq import Queue, Worker
from saq.job import Job
from saq.types import Context

from shared.db import Database
from shared.logs import configure_logging
from shared.settings import load_settings
from shared.tokens import ServiceTokenSource
from ultrai_documents.analysis.analyst import Analyst
from ultrai_documents.analysis.notify import notifier_for
from ultrai_documents.analysis.runner import JOB_FUNCTION, analysis_queue
from ultrai_documents.llm import ModelCatalog, llm_client
from ultrai_documents.settings import DocumentsSettings

SERVICE = "documents"
log = logging.getLogger("ultrai_documents.worker")


class AnalysisContext(Context, total=False):
    analyst: Analyst


async def run_analysis(ctx: AnalysisContext, *, analysis_id: str) -> None:
    """The job: the analyst runs the analysis while a companion task beats the job's heartbeat.
    A job delivered again (its first worker stopped beating) takes the running analysis over."""
    job = ctx["job"]
    analyst = ctx["analyst"]
    beat = asyncio.create_task(_heartbeat(job), name=f"heartbeat-{analysis_id}")
    try:
        await analyst.run(analysis_id, takeover=job.attempts > 1)
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)


async def _heartbeat(job: Job) -> None:
    period = max(job.heartbeat / 3, 0.2) if job.heartbeat else 10.0
    while True:
        await asyncio.sleep(period)
        try:
            await job.update()
        except Exception as exc:  # Redis away for a moment: the next beat tries again
            log.warning("could not beat the heartbeat of %s (%s)", job.key, type(exc).__name__)


class _QuietWorker(Worker[AnalysisContext]):
    """A SAQ worker that leaves the process' signals alone (inside the web process, uvicorn's)."""

    SIGNALS: list[signal.Signals] = []


def make_worker(
    queue: Queue, analyst: Analyst, settings: DocumentsSettings, *, own_signals: bool = True
) -> Worker[AnalysisContext]:
    """The SAQ worker of analyses. ``own_signals``: SIGTERM/SIGINT stop it (its own process)."""

    async def startup(ctx: AnalysisContext) -> None:
        ctx["analyst"] = analyst

    cls: type[Worker[AnalysisContext]] = Worker if own_signals else _QuietWorker
    return cls(
        queue,
        functions=[(JOB_FUNCTION, run_analysis)],
        # Who runs a job, as SAQ records it: this host and process (its logs and the monitoring UI).
        id=f"{socket.gethostname()}:{os.getpid()}",
        concurrency=settings.analysis_workers,
        startup=startup,
        timers={
            "sweep": settings.analysis_sweep_seconds,
            "abort": 1,
            "schedule": 1,
            "worker_info": 10,
        },
        # A bounded wait for the next job, so that a stop does not wait on an idle dequeue.
        dequeue_timeout=1.0,
        shutdown_grace_period_s=settings.analysis_shutdown_grace_seconds,
    )


@contextlib.asynccontextmanager
async def analysis_context(settings: DocumentsSettings) -> AsyncIterator[tuple[Queue, Analyst]]:
    """What a worker runs on: the database, the llm client and the queue, closed afterwards."""
    db = Database(settings, SERVICE)
    tokens = ServiceTokenSource(settings, SERVICE, "llm")
    llm = llm_client(settings, tokens)
    notifier = notifier_for(
        settings.redis_url, settings.redis_key_prefix, settings.sse_poll_seconds, settings.sse_fallback_seconds
    )
    queue = analysis_queue(settings)
    analyst = Analyst(db.sessions, llm, settings, ModelCatalog(llm), notifier)
    try:
        await queue.connect()
        yield queue, analyst
    finally:
        with contextlib.suppress(Exception):
            await queue.disconnect()
        await notifier.aclose()
        await llm.aclose()
        await tokens.aclose()
        await db.dispose()


async def consume_in_process(queue: Queue, analyst: Analyst, settings: DocumentsSettings) -> asyncio.Task[None]:
    """The worker inside the documents web process (ANALYSIS_WEB_CONSUMES); cancel the task to stop."""
    worker = make_worker(queue, analyst, settings, own_signals=False)

    async def run() -> None:
        try:
            await worker.start()
        finally:
            await worker.stop()

    return asyncio.create_task(run(), name="analysis-worker")


async def main() -> None:
    settings = load_settings(DocumentsSettings, SERVICE)
    configure_logging("documents-worker", settings.log_level, settings.json_logs)
    if not settings.redis_url:
        raise SystemExit("REDIS_URL: the analysis worker takes its jobs from Redis; set REDIS_URL")
    async with analysis_context(settings) as (queue, analyst):
        worker = make_worker(queue, analyst, settings)
        log.info(
            "analysis worker started: queue %s, %d at once, heartbeat %d s, sweep every %d s",
            queue.name,
            settings.analysis_workers,
            settings.analysis_heartbeat_seconds,
            settings.analysis_sweep_seconds,
        )
        await worker.start()
    log.info("analysis worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
