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
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from saq import Queue, Worker
from saq.job import TERMINAL_STATUSES, Job
from saq.types import Context

from shared.db import Database
from shared.logs import configure_logging
from shared.settings import load_settings
from shared.tokens import ServiceTokenSource
from ultrai_documents.analysis.analyst import Analyst
from ultrai_documents.analysis.metrics import Outcome, QueueMetrics
from ultrai_documents.analysis.notify import notifier_for
from ultrai_documents.analysis.runner import JOB_FUNCTION, analysis_queue
from ultrai_documents.llm import ModelCatalog, llm_client
from ultrai_documents.models import utcnow
from ultrai_documents.repository import DocumentsRepository
from ultrai_documents.settings import DocumentsSettings

SERVICE = "documents"
log = logging.getLogger("ultrai_documents.worker")


class AnalysisContext(Context, total=False):
    analyst: Analyst
    metrics: QueueMetrics
    settler: asyncio.Task[None]


async def run_analysis(ctx: AnalysisContext, *, analysis_id: str) -> Outcome:
    """The job: the analyst runs the analysis while a companion task beats the job's heartbeat.
    A job delivered again (its first worker stopped beating) takes the running analysis over.
    Its wait, run time and outcome go to the queue's metrics (analysis/metrics.py); the outcome is
    also the job's result (SAQ keeps it with the job)."""
    job = ctx["job"]
    analyst = ctx["analyst"]
    metrics = ctx["metrics"]
    started = time.perf_counter()
    # SAQ's times are epoch milliseconds: enqueued, and taken by this worker.
    await metrics.started(job.attempts, (job.started - job.queued) / 1000 if job.started and job.queued else None)
    stop = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(job, analyst, analysis_id, stop), name=f"heartbeat-{analysis_id}")
    outcome: Outcome = "interrupted"
    try:
        outcome = await analyst.run(analysis_id, takeover=job.attempts > 1)
    finally:
        await _stop_heartbeat(beat, stop, job)
        # Also when the job is aborted, times out or its worker stops (the task is cancelled).
        with contextlib.suppress(asyncio.CancelledError):
            await metrics.ended(outcome, time.perf_counter() - started)
    return outcome


def _beat_period(job: Job) -> float:
    return max(job.heartbeat / 3, 0.2) if job.heartbeat else 10.0


async def _heartbeat(job: Job, analyst: Analyst, analysis_id: str, stop: asyncio.Event) -> None:
    """The job's heartbeat in Redis (what SAQ's sweep reads) and the analysis' in its row (what
    ``settle_abandoned`` reads), until ``stop`` is set. A beat under way when the analysis ends is
    finished, not cancelled: a task cancelled inside a database transaction can leave its
    connection, and the job's slot with it, waiting for good."""
    period = _beat_period(job)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        if stop.is_set():
            return
        try:
            await job.update()
            async with analyst.sessions() as session:
                repository = DocumentsRepository(session)
                await repository.touch_analyses([analysis_id], utcnow())
                await repository.commit()
        except Exception as exc:  # Redis or the database away for a moment: the next beat tries again
            log.warning("could not beat the heartbeat of %s (%s)", job.key, type(exc).__name__)


async def _stop_heartbeat(beat: asyncio.Task[None], stop: asyncio.Event, job: Job) -> None:
    """Ask the heartbeat to stop after its beat under way; cancel it only if that beat does not end
    within a few periods (Redis or the database stuck), so the job's end is never held for good."""
    stop.set()
    done, _ = await asyncio.wait({beat}, timeout=3 * _beat_period(job) + 5)
    if not done:
        log.warning("the heartbeat of %s did not stop after its beat; cancelled", job.key)
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)


ABANDONED = "The analysis was interrupted too often (its worker stopped each time)."


async def settle_abandoned(queue: Queue, analyst: Analyst, settings: DocumentsSettings) -> list[str]:
    """Analyses the queue gave up on: running in the database, no heartbeat for two periods, and
    their job ended (SAQ's sweep aborts a job for good after ANALYSIS_ATTEMPTS deliveries) or gone
    (Redis lost it). They end as ``failed``, so that their owner is told and no longer held to the
    limit of running analyses. Returns their ids."""
    silent_since = utcnow() - timedelta(seconds=2 * settings.analysis_heartbeat_seconds)
    async with analyst.sessions() as session:
        candidates = await DocumentsRepository(session).silent_analyses(silent_since)
    if not candidates:
        return []
    jobs = await queue.jobs(analysis_id for analysis_id, _ in candidates)
    settled = []
    for (analysis_id, attempt), job in zip(candidates, jobs, strict=True):
        if job is not None and job.status not in TERMINAL_STATUSES:
            continue
        async with analyst.sessions() as session:
            repository = DocumentsRepository(session)
            ended = await repository.fenced_update(
                analysis_id, attempt, status="failed", stage=None, error=ABANDONED, finished_at=utcnow()
            )
            if ended:
                await repository.add_event(analysis_id, "failed", {"status": "failed", "error": ABANDONED})
            await repository.commit()
        if ended:
            log.warning("analysis %s: abandoned by the queue, recorded as failed", analysis_id)
            await analyst.notifier.publish(analysis_id)
            await QueueMetrics(queue, settings.redis_key_prefix).ended("abandoned", None)
            settled.append(analysis_id)
    return settled


async def _settle_every(queue: Queue, analyst: Analyst, settings: DocumentsSettings) -> None:
    while True:
        await asyncio.sleep(settings.analysis_sweep_seconds)
        try:
            await settle_abandoned(queue, analyst, settings)
        except Exception:
            log.exception("could not settle the abandoned analyses")


class _QuietWorker(Worker[AnalysisContext]):
    """A SAQ worker that leaves the process' signals alone (inside the web process, uvicorn's)."""

    SIGNALS: list[signal.Signals] = []


def make_worker(
    queue: Queue, analyst: Analyst, settings: DocumentsSettings, *, own_signals: bool = True
) -> Worker[AnalysisContext]:
    """The SAQ worker of analyses. ``own_signals``: SIGTERM/SIGINT stop it (its own process)."""

    async def startup(ctx: AnalysisContext) -> None:
        ctx["analyst"] = analyst
        ctx["metrics"] = QueueMetrics(queue, settings.redis_key_prefix)
        ctx["settler"] = asyncio.create_task(_settle_every(queue, analyst, settings), name="analysis-settler")

    async def shutdown(ctx: AnalysisContext) -> None:
        settler = ctx.get("settler")
        if settler is not None:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)

    cls: type[Worker[AnalysisContext]] = Worker if own_signals else _QuietWorker
    return cls(
        queue,
        functions=[(JOB_FUNCTION, run_analysis)],
        # Who runs a job, as SAQ records it: this host and process (its logs and the monitoring UI).
        id=f"{socket.gethostname()}:{os.getpid()}",
        concurrency=settings.analysis_workers,
        startup=startup,
        shutdown=shutdown,
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
